/* In-browser verification of what the ledger serves, with WebCrypto only (SHA-256, Ed25519).
 *
 * The same formats as the server (see docs/explorer.md):
 *   - RFC 9162 Merkle trees: leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right); a log leaf's
 *     data is the 32-byte SHA-256 digest of the event payload (the event id without "sha256:");
 *   - C2SP signed notes and tlog-checkpoints with Ed25519 key IDs SHA-256(name || 0x0A || 0x01 || key)[:4];
 *   - DSSE v1 PAE: "DSSEv1 <len type> <type> <len body> <body>";
 *   - RFC 8785 canonical JSON for the payloads it signs (objects with sorted keys, ES number and string forms);
 *   - key files written by `ledger keygen` ({"type": "ed25519", "private_key": base64 seed, ...}).
 * Every check throws a VerifyError whose message says what failed.
 */
(function (global) {
  "use strict";

  class VerifyError extends Error {}

  const enc = new TextEncoder();
  const dec = new TextDecoder("utf-8", { fatal: true });
  const PAYLOAD_TYPE = "application/vnd.mineral-ledger.event+json; version=1";
  const BUNDLE_FORMAT = "mineral-ledger/bundle/v1";
  const EMPTY_ROOT_HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

  function concat(...parts) {
    const total = parts.reduce((n, p) => n + p.length, 0);
    const out = new Uint8Array(total);
    let offset = 0;
    for (const p of parts) {
      out.set(p, offset);
      offset += p.length;
    }
    return out;
  }

  function equal(a, b) {
    if (a.length !== b.length) return false;
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
    return diff === 0;
  }

  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function fromHex(text, what) {
    if (!/^([0-9a-f]{2})*$/.test(text)) throw new VerifyError(`${what} is not lowercase hex`);
    const out = new Uint8Array(text.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(i * 2, 2), 16);
    return out;
  }

  /** Strict standard base64 with padding (RFC 4648 section 4), as the server decodes it. */
  function b64decode(text, what) {
    if (typeof text !== "string" || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) {
      throw new VerifyError(`${what} is not valid standard base64`);
    }
    const binary = atob(text);
    const out = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
    if (b64encode(out) !== text) throw new VerifyError(`${what} is not canonical base64`);
    return out;
  }

  function b64encode(bytes) {
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(binary);
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  const LEAF = new Uint8Array([0]);
  const NODE = new Uint8Array([1]);
  const leafHash = (data) => sha256(concat(LEAF, data));
  const nodeHash = (left, right) => sha256(concat(NODE, left, right));

  async function ed25519Verify(publicKey, message, signature) {
    if (publicKey.length !== 32) throw new VerifyError(`an Ed25519 public key has 32 bytes, not ${publicKey.length}`);
    if (signature.length !== 64) return false;
    const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  }

  // ---- RFC 9162 proofs -------------------------------------------------------------------------------------

  function inclusionLength(index, size) {
    let length = 0;
    let start = 0;
    let end = size;
    while (end - start > 1) {
      const k = largestPowerOfTwoBelow(end - start);
      if (index < start + k) end = start + k;
      else start += k;
      length++;
    }
    return length;
  }

  function largestPowerOfTwoBelow(n) {
    let k = 1;
    while (k * 2 < n) k *= 2;
    return k;
  }

  function checkHash(h, what) {
    if (!(h instanceof Uint8Array) || h.length !== 32) throw new VerifyError(`${what} is not a 32-byte hash`);
  }

  /** RFC 9162 section 2.1.3.2: the root an inclusion proof implies (sizes below 2**53). */
  async function rootFromInclusion(leaf, index, size, proof) {
    if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size) {
      throw new VerifyError(`leaf index ${index} is not inside a tree of size ${size}`);
    }
    checkHash(leaf, "the leaf hash");
    const expected = inclusionLength(index, size);
    if (proof.length !== expected) {
      throw new VerifyError(
        `an inclusion proof for leaf ${index} in a tree of size ${size} has ${expected} hashes, but this one has ${proof.length}`,
      );
    }
    let fn = BigInt(index);
    let sn = BigInt(size - 1);
    let r = leaf;
    for (const [position, p] of proof.entries()) {
      checkHash(p, `inclusion proof element ${position}`);
      if (sn === 0n) throw new VerifyError("the inclusion proof is too long");
      if (fn & 1n || fn === sn) {
        r = await nodeHash(p, r);
        while (fn && !(fn & 1n)) {
          fn >>= 1n;
          sn >>= 1n;
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    if (sn !== 0n) throw new VerifyError("the inclusion proof is too short");
    return r;
  }

  async function verifyInclusion(leaf, index, size, proof, root) {
    const computed = await rootFromInclusion(leaf, index, size, proof);
    if (!equal(computed, root)) {
      throw new VerifyError(
        `inclusion proof for leaf ${index} in tree of size ${size} computes root ${hex(computed)} but the checkpoint's root is ${hex(root)}`,
      );
    }
  }

  function consistencyLength(first, second) {
    if (first === 0 || first === second) return 0;
    let start = 0;
    let end = second;
    let b = true;
    let length = 0;
    while (first - start !== end - start) {
      const k = largestPowerOfTwoBelow(end - start);
      if (first - start <= k) end = start + k;
      else {
        start += k;
        b = false;
      }
      length++;
    }
    return b ? length : length + 1;
  }

  /** RFC 9162 section 2.1.4.2, with the server's edge cases (first = 0, first = second). */
  async function verifyConsistency(first, second, proof, firstRoot, secondRoot) {
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(second) || first < 0 || first > second) {
      throw new VerifyError(`a consistency proof goes from a smaller tree to a larger one, not ${first} to ${second}`);
    }
    checkHash(firstRoot, "the first root hash");
    checkHash(secondRoot, "the second root hash");
    proof.forEach((p, i) => checkHash(p, `consistency proof element ${i}`));
    const expected = consistencyLength(first, second);
    if (proof.length !== expected) {
      throw new VerifyError(
        `a consistency proof from size ${first} to size ${second} has ${expected} hashes, but this one has ${proof.length}`,
      );
    }
    if (first === 0) {
      if (hex(firstRoot) !== EMPTY_ROOT_HEX) throw new VerifyError("a tree of size 0 has the empty root");
      return;
    }
    if (first === second) {
      if (!equal(firstRoot, secondRoot)) {
        throw new VerifyError(`two trees of the same size ${first} must have the same root`);
      }
      return;
    }
    const path = (first & (first - 1)) === 0 ? [firstRoot, ...proof] : [...proof];
    let fn = BigInt(first - 1);
    let sn = BigInt(second - 1);
    while (fn & 1n) {
      fn >>= 1n;
      sn >>= 1n;
    }
    let fr = path[0];
    let sr = path[0];
    for (const c of path.slice(1)) {
      if (sn === 0n) throw new VerifyError("the consistency proof is too long");
      if (fn & 1n || fn === sn) {
        fr = await nodeHash(c, fr);
        sr = await nodeHash(c, sr);
        while (fn && !(fn & 1n)) {
          fn >>= 1n;
          sn >>= 1n;
        }
      } else {
        sr = await nodeHash(sr, c);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    if (sn !== 0n) throw new VerifyError("the consistency proof is too short");
    if (!equal(fr, firstRoot)) {
      throw new VerifyError(
        `consistency proof from size ${first} to ${second} computes old root ${hex(fr)} but the old checkpoint's root is ${hex(firstRoot)}`,
      );
    }
    if (!equal(sr, secondRoot)) {
      throw new VerifyError(
        `consistency proof from size ${first} to ${second} computes new root ${hex(sr)} but the new checkpoint's root is ${hex(secondRoot)}`,
      );
    }
  }

  // ---- C2SP signed notes and checkpoints ---------------------------------------------------------------------

  async function noteKeyId(name, publicKey) {
    return (await sha256(concat(enc.encode(name + "\n"), new Uint8Array([1]), publicKey))).slice(0, 4);
  }

  /** "<name>+<hex key ID>+<base64(0x01 || key)>" -> {name, publicKey, keyId}; the ID must match. */
  async function parseVkey(vkey) {
    const parts = vkey.trim().split("+");
    if (parts.length < 3) throw new VerifyError("a verifier key has the form <name>+<hex key ID>+<base64 key>");
    const name = parts[0];
    const idHex = parts[1];
    const material = b64decode(parts.slice(2).join("+"), "the verifier key");
    if (material.length !== 33 || material[0] !== 1) {
      throw new VerifyError("the verifier key is not an Ed25519 key (0x01 followed by 32 bytes)");
    }
    const publicKey = material.slice(1);
    const derived = hex(await noteKeyId(name, publicKey));
    if (derived !== idHex) throw new VerifyError(`the verifier key's ID ${idHex} does not match its name and key (${derived})`);
    return { name, publicKey, keyId: idHex };
  }

  /** Split a signed note into its text and signature lines, without checking any signature. */
  function splitNote(note) {
    const split = note.lastIndexOf("\n\n");
    if (split < 0) throw new VerifyError("the note has no blank line separating its text from its signatures");
    const text = note.slice(0, split + 1);
    const block = note.slice(split + 2);
    if (!block) throw new VerifyError("the note has no signature lines");
    if (!block.endsWith("\n")) throw new VerifyError("the note's last signature line does not end with a newline");
    const lines = block.slice(0, -1).split("\n");
    if (lines.length > 100) throw new VerifyError(`the note has ${lines.length} signature lines, more than 100`);
    const signatures = lines.map((line, i) => {
      if (!line.startsWith("\u2014 ")) throw new VerifyError(`signature line ${i + 1} does not start with an em dash and a space`);
      const rest = line.slice(2);
      const space = rest.indexOf(" ");
      if (space <= 0) throw new VerifyError(`signature line ${i + 1} has no space between key name and signature`);
      const name = rest.slice(0, space);
      const encoded = rest.slice(space + 1);
      const blob = b64decode(encoded, `the signature on line ${i + 1}`);
      if (blob.length <= 4) throw new VerifyError(`the signature on line ${i + 1} is too short`);
      return { line: i + 1, name, keyId: hex(blob.slice(0, 4)), signature: blob.slice(4) };
    });
    return { text, signatures };
  }

  /** Verify every signature line by the pinned key (at least one); other keys' lines are listed, not checked. */
  async function openNote(note, vkey) {
    const key = await parseVkey(vkey);
    const { text, signatures } = splitNote(note);
    const textBytes = enc.encode(text);
    let verified = 0;
    for (const s of signatures) {
      s.ours = s.name === key.name && s.keyId === key.keyId;
      if (!s.ours) continue;
      if (!(await ed25519Verify(key.publicKey, textBytes, s.signature))) {
        throw new VerifyError(`signature line ${s.line} by key ${key.name}+${key.keyId} does not verify over the note text`);
      }
      s.verified = true;
      verified++;
    }
    if (!verified) throw new VerifyError(`the note has no signature by key ${key.name}+${key.keyId}`);
    return { text, signatures };
  }

  function parseCheckpoint(text) {
    if (!text.endsWith("\n")) throw new VerifyError("the checkpoint body does not end with a newline");
    const lines = text.slice(0, -1).split("\n");
    if (lines.length < 3) throw new VerifyError("a checkpoint has at least 3 lines (origin, tree size, root hash)");
    const [origin, sizeText, rootText, ...extensions] = lines;
    if (!/^(0|[1-9][0-9]*)$/.test(sizeText)) throw new VerifyError(`the tree size line ${sizeText} is not a decimal number`);
    const size = Number(sizeText);
    if (!Number.isSafeInteger(size)) throw new VerifyError("the tree size is too large for this page");
    const rootHash = b64decode(rootText, "the root hash line");
    if (rootHash.length !== 32) throw new VerifyError(`the root hash decodes to ${rootHash.length} bytes, not 32`);
    return { origin, size, rootHash, extensions };
  }

  async function openCheckpoint(note, vkey) {
    let opened;
    try {
      opened = await openNote(note, vkey);
    } catch (error) {
      if (error instanceof VerifyError) throw new VerifyError(`the checkpoint does not verify: ${error.message}`);
      throw error;
    }
    return Object.assign(parseCheckpoint(opened.text), { signatures: opened.signatures });
  }

  // ---- DSSE, events ------------------------------------------------------------------------------------------

  function pae(payloadType, payload) {
    const type = enc.encode(payloadType);
    return concat(enc.encode(`DSSEv1 ${type.length} `), type, enc.encode(` ${payload.length} `), payload);
  }

  async function eventId(payload) {
    return "sha256:" + hex(await sha256(payload));
  }

  async function leafForEvent(id) {
    if (!/^sha256:[0-9a-f]{64}$/.test(id)) throw new VerifyError(`${id} is not an event id (sha256: + 64 hex digits)`);
    return leafHash(fromHex(id.slice(7), "the event id"));
  }

  async function keyIdOf(publicKey) {
    return hex(await sha256(publicKey));
  }

  /** Check the envelope's signature by ``publicKey`` (its key id must be among the envelope's signatures). */
  async function verifyEnvelope(envelope, publicKey) {
    const kid = await keyIdOf(publicKey);
    const sig = (envelope.signatures || []).find((s) => s.keyid === kid);
    if (!sig) throw new VerifyError(`the envelope carries no signature by key ${kid}`);
    const payload = b64decode(envelope.payload, "the envelope's payload");
    const ok = await ed25519Verify(publicKey, pae(envelope.payloadType, payload), b64decode(sig.sig, "the signature"));
    if (!ok) throw new VerifyError(`the signature by key ${kid} does not verify: the envelope was altered`);
    return kid;
  }

  /** RFC 8785 for the values events hold (strings, integers, booleans, null, arrays, objects). */
  function canonical(value) {
    if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
    if (typeof value === "number") {
      if (!Number.isFinite(value)) throw new VerifyError("canonical JSON has no NaN or infinity");
      return JSON.stringify(value);
    }
    if (Array.isArray(value)) return "[" + value.map(canonical).join(",") + "]";
    if (typeof value === "object") {
      const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort();
      return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonical(value[k])).join(",") + "}";
    }
    throw new VerifyError(`canonical JSON cannot hold a ${typeof value}`);
  }

  // ---- key files and signing ---------------------------------------------------------------------------------

  const PKCS8_ED25519 = fromHex("302e020100300506032b657004220420", "prefix");

  /** A key file of `ledger keygen` -> a signer; the file stays in the page's memory. */
  async function loadKeyFile(text) {
    let document;
    try {
      document = JSON.parse(text);
    } catch (error) {
      throw new VerifyError("the key file is not JSON: choose a key file written by `ledger keygen`");
    }
    if (!document || document.type !== "ed25519" || typeof document.private_key !== "string") {
      throw new VerifyError("the key file is not an Ed25519 key file written by `ledger keygen`");
    }
    const seed = b64decode(document.private_key, "the key file's private_key");
    if (seed.length !== 32) throw new VerifyError(`the key file holds a private key of ${seed.length} bytes, expected 32`);
    if (typeof document.public_key !== "string") throw new VerifyError("the key file has no public_key");
    const publicKey = b64decode(document.public_key, "the key file's public_key");
    // the private key stays inside WebCrypto (not extractable); a probe signature ties it to the public key
    const privateKey = await crypto.subtle.importKey("pkcs8", concat(PKCS8_ED25519, seed), { name: "Ed25519" }, false, ["sign"]);
    const probe = enc.encode("mineral-ledger key file check");
    const signature = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, privateKey, probe));
    if (!(await ed25519Verify(publicKey, probe, signature))) {
      throw new VerifyError("the key file's public_key is not the public half of its private_key");
    }
    const keyId = await keyIdOf(publicKey);
    if (document.key_id && document.key_id !== keyId) {
      throw new VerifyError(`the key file says key id ${document.key_id}, but its key is ${keyId}`);
    }
    return {
      keyId,
      publicKey,
      async sign(message) {
        return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, privateKey, message));
      },
    };
  }

  /** A DSSE envelope of an event object, signed in the browser. */
  async function signEvent(event, signer) {
    const payload = enc.encode(canonical(event));
    const signature = await signer.sign(pae(PAYLOAD_TYPE, payload));
    return {
      payloadType: PAYLOAD_TYPE,
      payload: b64encode(payload),
      signatures: [{ keyid: signer.keyId, sig: b64encode(signature) }],
    };
  }

  // ---- bundles (ledger/rules/bundle.py's open_bundle, in the browser) ---------------------------------------

  function field(document, name, kind, where) {
    const value = document ? document[name] : undefined;
    const ok =
      kind === "array" ? Array.isArray(value) : kind === "int" ? Number.isSafeInteger(value) && value >= 0 : typeof value === kind && value !== null;
    if (!ok) throw new VerifyError(`${where} has no valid "${name}"`);
    return value;
  }

  /** Check a proof bundle: pinned key, checkpoint, every inclusion proof, every signature, every chain link.
   *  Returns a report {checkpoint, entries, steps, warnings}; throws VerifyError naming the first failure. */
  async function verifyBundle(document, pinnedVkey, progress) {
    const steps = [];
    const warnings = [];
    const say = (text) => {
      steps.push(text);
      if (progress) progress(text);
    };
    if (!document || document.format !== BUNDLE_FORMAT) {
      throw new VerifyError(`this is not a ${BUNDLE_FORMAT} bundle (format is ${JSON.stringify(document && document.format)})`);
    }
    const log = field(document, "log", "object", "the bundle");
    const vkey = field(log, "vkey", "string", "the bundle's log section").trim();
    if (pinnedVkey && vkey !== pinnedVkey.trim()) {
      throw new VerifyError(`the bundle pins log key ${vkey}, not this ledger's key ${pinnedVkey.trim()}: it was not produced by the ledger you trust`);
    }
    if (!pinnedVkey) warnings.push("no log key pinned: trusting the key the bundle names");
    const logKey = await parseVkey(vkey);
    const checkpoint = await openCheckpoint(field(log, "checkpoint", "string", "the bundle's log section"), vkey);
    say(`checkpoint of size ${checkpoint.size} signed by ${logKey.name}: verified`);

    const decoded = [];
    const seen = new Set();
    const entries = field(document, "entries", "array", "the bundle");
    for (const [position, entry] of entries.entries()) {
      const where = `entries[${position}]`;
      const logIndex = field(entry, "log_index", "int", where);
      if (seen.has(logIndex)) throw new VerifyError(`${where} repeats log index ${logIndex}`);
      seen.add(logIndex);
      const envelope = field(entry, "envelope", "object", where);
      const payload = b64decode(envelope.payload, `${where}.envelope.payload`);
      const id = await eventId(payload);
      const proof = field(entry, "proof", "array", where).map((h, i) => b64decode(h, `${where}.proof[${i}]`));
      try {
        await verifyInclusion(await leafForEvent(id), logIndex, checkpoint.size, proof, checkpoint.rootHash);
      } catch (error) {
        if (!(error instanceof VerifyError)) throw error;
        throw new VerifyError(`${where} (event ${id}, log index ${logIndex}) is not in the log the checkpoint commits to: ${error.message}`);
      }
      if (envelope.payloadType !== PAYLOAD_TYPE) throw new VerifyError(`${where} has payload type ${envelope.payloadType}, not ${PAYLOAD_TYPE}`);
      let event;
      try {
        event = JSON.parse(dec.decode(payload));
      } catch (error) {
        throw new VerifyError(`${where} (event ${id}) has a payload that is not UTF-8 JSON`);
      }
      if (canonical(event) !== dec.decode(payload)) throw new VerifyError(`${where} (event ${id}) has a payload that is not canonical JSON`);
      decoded.push({ logIndex, id, event, envelope, payload });
    }
    decoded.sort((a, b) => a.logIndex - b.logIndex);
    say(`${decoded.length} inclusion proofs against the checkpoint: verified`);

    const keys = new Map();
    for (const item of decoded) {
      const { event, envelope, payload, logIndex, id } = item;
      const signed = new Map((envelope.signatures || []).map((s) => [s.keyid, s]));
      let candidates;
      if (event.kind === "determination") {
        candidates = [[await keyIdOf(logKey.publicKey), logKey.publicKey]];
      } else if (event.kind === "participant_admitted" && event.actor === event.participant.id && keys.size === 0) {
        candidates = [];
        for (const k of event.keys || []) {
          const raw = b64decode(k.public_key, "a participant's key");
          candidates.push([await keyIdOf(raw), raw]);
        }
      } else {
        candidates = [...keys.entries()]
          .filter(([, r]) => r.participant === event.actor && r.addedAt < logIndex && (r.revokedAt === null || logIndex < r.revokedAt))
          .map(([kid, r]) => [kid, r.publicKey]);
      }
      const usable = candidates.filter(([kid]) => signed.has(kid));
      if (!usable.length) {
        throw new VerifyError(
          `event ${id} (log index ${logIndex}) is signed by no key of "${event.actor}" that the bundle's registry events show valid at that point of the log`,
        );
      }
      const [kid, publicKey] = usable[0];
      const ok = await ed25519Verify(publicKey, pae(envelope.payloadType, payload), b64decode(signed.get(kid).sig, "a signature"));
      if (!ok) throw new VerifyError(`event ${id} (log index ${logIndex}): the signature by key ${kid} does not verify; the envelope was altered`);
      item.signer = kid;
      if (event.kind === "participant_admitted") {
        for (const k of event.keys || []) {
          const raw = b64decode(k.public_key, "a participant's key");
          keys.set(await keyIdOf(raw), { participant: event.participant.id, publicKey: raw, addedAt: logIndex, revokedAt: null });
        }
      } else if (event.kind === "key_added") {
        const raw = b64decode(event.public_key, "an added key");
        keys.set(await keyIdOf(raw), { participant: event.participant, publicKey: raw, addedAt: logIndex, revokedAt: null });
      } else if (event.kind === "key_revoked" && keys.has(event.key_id)) {
        keys.get(event.key_id).revokedAt = logIndex;
      }
    }
    say(`${decoded.length} signatures by keys valid at their place in the log: verified`);

    const present = new Set(decoded.map((d) => d.id));
    for (const { event, id } of decoded) {
      let parents = [];
      if (["transfer", "receive", "split"].includes(event.kind)) parents = [[event.batch, event.parent]];
      else if (event.kind === "transform" || event.kind === "merge") parents = event.inputs.map((i) => [i.batch, i.parent]);
      for (const [batch, parent] of parents) {
        if (!present.has(parent)) {
          throw new VerifyError(`event ${id} names ${parent} as the previous event on batch "${batch}", but that event is missing from the bundle`);
        }
      }
    }
    say("every hash-chain link is present");
    return { checkpoint, entries: decoded, steps, warnings, determination: document.determination };
  }

  global.LedgerVerify = {
    VerifyError,
    PAYLOAD_TYPE,
    b64decode,
    b64encode,
    hex,
    fromHex,
    sha256,
    leafHash,
    nodeHash,
    leafForEvent,
    ed25519Verify,
    rootFromInclusion,
    verifyInclusion,
    verifyConsistency,
    parseVkey,
    splitNote,
    openNote,
    openCheckpoint,
    pae,
    eventId,
    keyIdOf,
    verifyEnvelope,
    canonical,
    loadKeyFile,
    signEvent,
    verifyBundle,
  };
})(window);
