/* The explorer's pages: wires buttons and forms to LedgerVerify (verify.js). No inline scripts: the pages hand
 * their data over in <script type="application/json"> blocks, which the browser never runs. */
(function () {
  "use strict";
  const V = window.LedgerVerify;

  const $ = (id) => document.getElementById(id);
  const data = (id) => JSON.parse($(id).textContent);
  const csrf = () => document.querySelector("main").dataset.csrf;

  function say(list, text, ok) {
    const item = document.createElement("li");
    item.className = ok === undefined ? "" : ok ? "pass" : "fail";
    item.textContent = (ok === undefined ? "" : ok ? "✔ " : "✘ ") + text;
    list.appendChild(item);
  }

  function result(element, ok, text) {
    element.className = "result " + (ok ? "pass" : "fail");
    element.textContent = (ok ? "PASS: " : "FAIL: ") + text;
    element.dataset.outcome = ok ? "pass" : "fail";
  }

  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new V.VerifyError(body.detail || `${url} answered ${response.status}`);
    return body;
  }

  async function getText(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new V.VerifyError(`${url} answered ${response.status}`);
    return response.text();
  }

  const b64list = (list) => list.map((h, i) => V.b64decode(h, `proof hash ${i}`));

  // ---- an event ------------------------------------------------------------------------------------------------
  async function verifyEvent() {
    const info = data("event-data");
    const list = $("event-checks");
    const out = $("event-result");
    list.textContent = "";
    out.className = "result";
    out.textContent = "Verifying…";
    delete out.dataset.outcome;
    try {
      if (!info.vkey) throw new V.VerifyError("this server has no log key to verify against");
      if (info.envelope) {
        const payload = V.b64decode(info.envelope.payload, "the envelope's payload");
        const computed = await V.eventId(payload);
        if (computed !== info.event_id) throw new V.VerifyError(`the envelope's payload hashes to ${computed}, not ${info.event_id}`);
        say(list, `the payload hashes to the event id ${computed.slice(0, 19)}…`, true);
        if (info.ledger_signed) {
          const key = await V.parseVkey(info.vkey);
          await V.verifyEnvelope(info.envelope, key.publicKey);
          say(list, "the envelope's signature by the ledger's log key verifies (Ed25519)", true);
        } else if (info.public_key) {
          const kid = await V.verifyEnvelope(info.envelope, V.b64decode(info.public_key, "the signer's key"));
          say(list, `the envelope's signature by key ${kid.slice(0, 12)}… verifies (Ed25519)`, true);
        } else {
          say(list, "the signer's key is not published here; the signature was not checked");
        }
      } else {
        say(list, "the envelope is withheld from you: only the inclusion of the event id is checked");
      }
      let proof;
      let note;
      for (let attempt = 0; attempt < 20; attempt++) {
        note = await getText("/v1/log/checkpoint");
        const size = Number(note.split("\n")[1]);
        if (size > info.log_index) {
          proof = await getJson(`/v1/log/proofs/inclusion?event_id=${encodeURIComponent(info.event_id)}&tree_size=${size}`);
          break;
        }
        await new Promise((r) => setTimeout(r, 500));
      }
      if (!proof) throw new V.VerifyError("no checkpoint covers this event yet; try again in a moment");
      const checkpoint = await V.openCheckpoint(note, info.vkey);
      say(list, `the checkpoint of size ${checkpoint.size} is signed by the pinned log key ${checkpoint.signatures.find((s) => s.ours).name}`, true);
      if (proof.tree_size !== checkpoint.size) throw new V.VerifyError(`the proof is for size ${proof.tree_size}, the checkpoint is of size ${checkpoint.size}`);
      if (proof.log_index !== info.log_index) throw new V.VerifyError(`the proof is for log index ${proof.log_index}, the event is at ${info.log_index}`);
      await V.verifyInclusion(await V.leafForEvent(info.event_id), proof.log_index, checkpoint.size, b64list(proof.hashes), checkpoint.rootHash);
      say(list, `the inclusion proof (${proof.hashes.length} hashes) recomputes the checkpoint's root`, true);
      result(out, true, `event ${info.event_id.slice(0, 19)}… is entry ${info.log_index} of the log of size ${checkpoint.size}, signed by the pinned key.`);
    } catch (error) {
      say(list, error.message, false);
      result(out, false, error.message);
    }
  }

  // ---- the log ---------------------------------------------------------------------------------------------------
  async function verifyLatestCheckpoint() {
    const { vkey } = data("log-data");
    const out = $("checkpoint-result");
    const body = $("signature-lines").querySelector("tbody");
    body.textContent = "";
    const note = $("latest-note").textContent;
    try {
      const { signatures } = V.splitNote(note);
      const checkpoint = await V.openCheckpoint(note, vkey);
      for (const s of signatures) {
        const verified = checkpoint.signatures.find((c) => c.line === s.line).verified;
        const row = body.insertRow();
        row.insertCell().textContent = String(s.line);
        row.insertCell().textContent = s.name;
        row.insertCell().textContent = s.keyId;
        row.insertCell().textContent = verified ? "verified: the pinned log key" : "another key (a witness's cosignature?): not checked here";
      }
      result(out, true, `checkpoint of size ${checkpoint.size} (${checkpoint.origin}) is signed by the pinned log key; root ${V.b64encode(checkpoint.rootHash)}.`);
    } catch (error) {
      result(out, false, error.message);
    }
  }

  async function verifyConsistency(event) {
    event.preventDefault();
    const { vkey } = data("log-data");
    const out = $("consistency-result");
    out.className = "result";
    out.textContent = "Verifying…";
    delete out.dataset.outcome;
    try {
      const first = Number($("first-size").value);
      const second = Number($("second-size").value);
      if (first > second) throw new V.VerifyError("choose the older (smaller) size first");
      const older = await V.openCheckpoint(await getText(`/v1/log/checkpoints/${first}`), vkey);
      const newer = await V.openCheckpoint(await getText(`/v1/log/checkpoints/${second}`), vkey);
      if (older.origin !== newer.origin) throw new V.VerifyError("the checkpoints are of different logs");
      const proof = await getJson(`/v1/log/proofs/consistency?first=${first}&second=${second}`);
      if (proof.first !== first || proof.second !== second) throw new V.VerifyError("the proof is for other sizes");
      await V.verifyConsistency(first, second, b64list(proof.hashes), older.rootHash, newer.rootHash);
      result(out, true, `the tree of size ${second} extends the tree of size ${first}: both checkpoints are signed by the pinned key and the consistency proof (${proof.hashes.length} hashes) holds.`);
    } catch (error) {
      result(out, false, error.message);
    }
  }

  // ---- bundles ---------------------------------------------------------------------------------------------------
  async function checkBundleFile(file) {
    const { vkey } = data("bundle-data");
    const list = $("bundle-steps");
    const out = $("bundle-result");
    list.textContent = "";
    out.className = "result";
    out.textContent = `Checking ${file.name}…`;
    delete out.dataset.outcome;
    try {
      let document;
      try {
        document = JSON.parse(await file.text());
      } catch (error) {
        throw new V.VerifyError(`${file.name} is not a JSON bundle`);
      }
      const report = await V.verifyBundle(document, vkey, (text) => say(list, text, true));
      for (const warning of report.warnings) say(list, `warning: ${warning}`);
      const d = report.determination || {};
      result(
        out,
        true,
        `${file.name}: ${report.entries.length} entries, every signature, inclusion proof and the checkpoint verify. It states: batch ${document.batch} is ${String(d.verdict || "?").replace("_", " ")} under ${(d.profile || {}).id} on ${document.at}.`,
      );
    } catch (error) {
      say(list, error.message, false);
      result(out, false, error.message);
    }
  }

  // ---- signing forms ---------------------------------------------------------------------------------------------
  let signer = null;

  async function loadKey(event) {
    const out = $("key-status");
    try {
      signer = await V.loadKeyFile(await event.target.files[0].text());
      result(out, true, `key ${signer.keyId.slice(0, 16)}… loaded into this page (not uploaded).`);
    } catch (error) {
      signer = null;
      result(out, false, error.message);
    }
  }

  function timestamp() {
    const chosen = $("event-time").value.trim();
    return chosen || new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  async function buildEvent(kind, form) {
    const f = Object.fromEntries(new FormData(form).entries());
    const actor = data("record-data").actor;
    const base = { kind, actor, timestamp: timestamp() };
    const int = (text, what) => {
      if (!/^[1-9][0-9]*$/.test(String(text).trim())) throw new V.VerifyError(`${what} must be a whole number of grams`);
      return Number(text);
    };
    if (kind === "extract") {
      const batch = { id: f.batch.trim(), mineral: f.mineral.trim(), form: f.form.trim(), mass_g: int(f.mass_g, "mass") };
      if (f.amount && f.amount.trim()) batch.value = { amount: f.amount.trim(), currency: (f.currency || "USD").trim() };
      return { ...base, facility: f.facility.trim(), batch };
    }
    if (kind === "transfer") {
      const customs = form.querySelector("[name=customs_control]").checked;
      const route = f.route.split(",").map((c) => ({ country: c.trim(), customs_control: customs }));
      const event = { ...base, batch: f.batch.trim(), parent: f.parent.trim(), to: f.to.trim(), route };
      if (f.to_facility && f.to_facility.trim()) event.to_facility = f.to_facility.trim();
      return event;
    }
    if (kind === "receive") {
      return { ...base, batch: f.batch.trim(), parent: f.parent.trim(), facility: f.facility.trim(), mass_g: int(f.mass_g, "mass") };
    }
    if (kind === "attest") {
      const report = form.querySelector("[name=report]").files[0];
      const digest = V.hex(await V.sha256(new Uint8Array(await report.arrayBuffer())));
      return {
        ...base,
        attestation: {
          id: f.id.trim(),
          subject: { facility: f.facility.trim() },
          standard: f.standard,
          level: f.level.trim(),
          valid_from: f.valid_from,
          valid_to: f.valid_to,
          report_sha256: digest,
        },
      };
    }
    throw new V.VerifyError(`unknown form ${kind}`);
  }

  async function submitSigned(event) {
    event.preventDefault();
    const form = event.target;
    const out = form.querySelector("[data-result]");
    out.className = "result";
    out.textContent = "Signing…";
    delete out.dataset.outcome;
    try {
      if (!signer) throw new V.VerifyError("load your key file first");
      const ledgerEvent = await buildEvent(form.dataset.kind, form);
      const envelope = await V.signEvent(ledgerEvent, signer);
      const response = await fetch("/ui/api/events", {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": csrf() },
        body: JSON.stringify(envelope),
      });
      const body = await response.json();
      if (!response.ok) throw new V.VerifyError(`the ledger refused it (${response.status}): ${body.detail}`);
      out.textContent = "";
      out.className = "result pass";
      out.dataset.outcome = "pass";
      out.append(`PASS: ${form.dataset.kind} ${body.status}, log entry ${body.log_index}: `);
      const link = document.createElement("a");
      link.href = `/ui/events/${body.event_id}`;
      link.textContent = body.event_id;
      out.append(link);
    } catch (error) {
      result(out, false, error.message);
    }
  }

  // ---- wiring ----------------------------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    if ($("event-data")) {
      $("verify-event").addEventListener("click", verifyEvent);
      verifyEvent();
    }
    if ($("log-data")) {
      $("verify-checkpoint").addEventListener("click", verifyLatestCheckpoint);
      $("consistency-form").addEventListener("submit", verifyConsistency);
      verifyLatestCheckpoint();
    }
    if ($("bundle-data")) {
      $("bundle-file").addEventListener("change", (e) => e.target.files[0] && checkBundleFile(e.target.files[0]));
      const zone = $("dropzone");
      zone.addEventListener("dragover", (e) => {
        e.preventDefault();
        zone.classList.add("over");
      });
      zone.addEventListener("dragleave", () => zone.classList.remove("over"));
      zone.addEventListener("drop", (e) => {
        e.preventDefault();
        zone.classList.remove("over");
        if (e.dataTransfer.files[0]) checkBundleFile(e.dataTransfer.files[0]);
      });
    }
    if ($("record-data")) {
      $("key-file").addEventListener("change", loadKey);
      for (const form of document.querySelectorAll("form.sign-form")) form.addEventListener("submit", submitSigned);
    }
  });
})();
