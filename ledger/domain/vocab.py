"""Controlled vocabularies: countries, currencies, roles, facility kinds, minerals and forms."""

from __future__ import annotations


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ISO 3166-1 alpha-2, officially assigned codes.
COUNTRIES: frozenset[str] = _codes(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW
    BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI
    FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN
    IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME
    MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF
    PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE
    YT ZA ZM ZW
    """
)

# ISO 4217 active currency codes (plus XAU/XAG for metals priced in troy ounces).
CURRENCIES: frozenset[str] = _codes(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD
    CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ
    GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR
    LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN
    PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB
    TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    XAU XAG
    """
)

ROLES: frozenset[str] = frozenset(
    {"miner", "processor", "recycler", "manufacturer", "trader", "carrier", "auditor", "customs", "registrar"}
)

FACILITY_KINDS: frozenset[str] = frozenset(
    {"mine", "refinery", "smelter", "plant", "recycler", "warehouse", "port"}
)

MINERALS: frozenset[str] = frozenset(
    {
        "lithium",
        "cobalt",
        "nickel",
        "graphite",
        "manganese",
        "rare_earths",
        # not on every critical-minerals list: a profile's `critical_minerals` says which count
        "copper",
        "aluminium",
        "iron",
        "phosphate",
    }
)

MIXED = "mixed"
"""The mineral label of a product made from several minerals (e.g. NMC cathode material, a cell); only a
transform's output may carry it, and its content is traced source by source, never by this label."""

FORMS: frozenset[str] = frozenset(
    {
        "ore",
        "concentrate",  # e.g. spodumene concentrate, cobalt concentrate
        "brine",
        "intermediate",  # e.g. mixed hydroxide precipitate, matte
        "carbonate",
        "hydroxide",
        "sulfate",
        "oxide",
        "chloride",
        "metal",
        "alloy",
        "precursor",  # pCAM
        "cathode_material",  # CAM
        "anode_material",
        "spherical_graphite",
        "magnet",
        "black_mass",
        "scrap",
        "cell",
        "module",
        "pack",
    }
)

PROCESS_TYPES: frozenset[str] = frozenset(
    {
        "beneficiation",
        "refining",
        "smelting",
        "conversion",
        "precursor",
        "cathode",
        "anode",
        "recycling",
        "alloying",
        "blending",
        "cell_assembly",
        "module_assembly",
        "pack_assembly",
    }
)
"""Transform processes. A rule profile classes each one as mineral processing (which can confer origin) or
component manufacturing and assembly (which never does). ``recycling`` as a transform is the first release's
form of a recycling step; new recyclings are ``recycle`` events."""

TRANSIT_OPERATIONS: frozenset[str] = frozenset(
    {
        "unloading",
        "reloading",
        "storage",
        "splitting",
        "labelling",
        "preservation",
        "repackaging",
        "blending",
        "processing",
    }
)
"""What can happen to goods in a country they cross; a profile's transit rule says which keep their origin."""

FEEDSTOCK_CATEGORIES: frozenset[str] = frozenset(
    {"post_consumer", "pre_consumer", "end_of_life_battery", "production_scrap"}
)

OWNER_KINDS: frozenset[str] = frozenset(
    {"government", "government_official", "state_enterprise", "political_party", "company", "fund", "person"}
)
"""Kinds of owners that are not participants; a profile lists the kinds it treats as a government."""

CUSTODY_MODELS: frozenset[str] = frozenset(
    {
        "identity_preserved",
        "segregated",
        "controlled_blending",
        "mass_balance_rolling_average",
        "mass_balance_credit",
    }
)
"""ISO 22095 chain-of-custody models."""

MASS_BALANCE_PERIODS: frozenset[str] = frozenset({"month", "quarter", "year"})

IRMA_LEVELS = ("transparency", "irma_50", "irma_75", "irma_100")
"""IRMA achievement levels, lowest first."""

STANDARD_LEVELS: dict[str, tuple[str, ...]] = {
    "irma": IRMA_LEVELS,
    "rmap": ("conformant", "active", "not_conformant"),
    "iso14001": ("certified",),
    "oecd_ddg": ("conformant", "not_conformant"),
}
"""Attestation standards with a fixed vocabulary of levels (IRMA, RMI RMAP, ISO 14001, OECD due-diligence
guidance audit). Any other standard is free-form, written ``other:<name>``, with a free-form level."""

ACTIVITIES: frozenset[str] = frozenset({"extraction", "processing", "recycling"})
