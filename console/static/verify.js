// Re-verifies an action page's evidence in the reader's browser, with WebCrypto alone.
//
// Trust comes from what the investigator pinned at login (kept in this browser's localStorage),
// never from the page: the log's verifier key, the witnesses' keys and the quorum. The evidence
// is the action's bundle (affidavit-bundle/1) embedded in the page as JSON. Checked here, as
// C2SP and RFC 9162 define them (the same checks as client/verify.py and merkle/):
//   1. the checkpoint note carries a valid Ed25519 signature by the pinned log key, over the
//      note's body, and its origin is that key's name;
//   2. at least `quorum` pinned witnesses cosigned it (cosignature/v1: Ed25519 over
//      "cosignature/v1\ntime <t>\n" + body);
//   3. every entry's leaf hash, SHA-256(0x00 || leaf), is included at its index in the
//      checkpoint's tree (RFC 9162 2.1.3.2);
//   4. every statement the page shows (each element with data-leaf-hash) is one of them.
// The page turns green only when all of that holds, and lists what failed otherwise.
"use strict";

(function () {
  const PINS = "affidavit.console.pins";
  const enc = new TextEncoder();

  function b64(text) {
    const raw = atob(text);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }
  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
  function equal(a, b) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }
  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  // A verifier key text: <name>+<8 hex key hash>+<base64(alg || 32-byte public key)>; the
  // name has no "+", the base64 may (split as Go's note.NewVerifier does).
  async function parseKey(text, alg) {
    const m = /^([^+]+)\+([0-9a-f]{8})\+(.+)$/.exec(text.trim());
    if (!m) throw new Error(`not a verifier key: ${text.slice(0, 40)}`);
    const [, name, hash, body] = m;
    const raw = b64(body);
    if (raw.length !== 33 || raw[0] !== alg) {
      throw new Error(`key ${name}: expected algorithm ${alg} and a 32-byte key`);
    }
    const keyHash = (await sha256(concat(enc.encode(name + "\n"), raw))).slice(0, 4);
    if (hex(keyHash) !== hash) throw new Error(`key ${name}: its key hash does not match`);
    const key = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, [
      "verify",
    ]);
    return { name, keyHash, key };
  }

  // A signed note: body (ending in a newline), a blank line, then "— <name> <base64>" lines.
  function parseNote(text) {
    const split = text.indexOf("\n\n");
    if (split < 0) throw new Error("the checkpoint is not a signed note");
    const body = text.slice(0, split + 1);
    const sigs = text
      .slice(split + 2)
      .split("\n")
      .filter((line) => line.length > 0)
      .map((line) => {
        const m = /^\u2014 (\S+) (\S+)$/.exec(line);
        if (!m) throw new Error("a signature line of the checkpoint is malformed");
        return { name: m[1], sig: b64(m[2]) };
      });
    return { body, sigs };
  }

  async function verifyLog(note, logKey) {
    for (const s of note.sigs) {
      if (s.name !== logKey.name || !equal(s.sig.slice(0, 4), logKey.keyHash)) continue;
      const ok = await crypto.subtle.verify(
        { name: "Ed25519" },
        logKey.key,
        s.sig.slice(4),
        enc.encode(note.body),
      );
      if (ok) return true;
    }
    return false;
  }

  async function cosigned(note, witness) {
    for (const s of note.sigs) {
      if (s.name !== witness.name || !equal(s.sig.slice(0, 4), witness.keyHash)) continue;
      if (s.sig.length !== 4 + 8 + 64) continue;
      let time = 0n;
      for (const b of s.sig.slice(4, 12)) time = (time << 8n) | BigInt(b);
      const message = enc.encode(`cosignature/v1\ntime ${time}\n${note.body}`);
      const ok = await crypto.subtle.verify(
        { name: "Ed25519" },
        witness.key,
        s.sig.slice(12),
        message,
      );
      if (ok) return true;
    }
    return false;
  }

  // RFC 9162 2.1.3.2: verify an inclusion proof of leafHash at index in a tree of size.
  async function included(leafHash, index, size, proof, root) {
    if (index >= size) return false;
    let fn = index;
    let sn = size - 1;
    let r = leafHash;
    const one = new Uint8Array([1]);
    for (const p of proof) {
      if (sn === 0) return false;
      if (fn % 2 === 1 || fn === sn) {
        r = await sha256(concat(one, p, r));
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      } else {
        r = await sha256(concat(one, r, p));
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    return sn === 0 && equal(r, root);
  }

  async function verify(evidence, pins) {
    const failures = [];
    const passed = [];
    const logKey = await parseKey(pins.logKey, 0x01);
    const note = parseNote(evidence.checkpoint);
    const lines = note.body.split("\n");
    const origin = lines[0];
    const size = Number(lines[1]);
    const root = b64(lines[2] || "");
    if (origin !== logKey.name) {
      failures.push(`the checkpoint is of log "${origin}", not the pinned "${logKey.name}"`);
    }
    if (!Number.isSafeInteger(size) || root.length !== 32) {
      failures.push("the checkpoint body is malformed");
    }
    if (await verifyLog(note, logKey)) {
      passed.push(`checkpoint of size ${size} signed by the log key you pinned (${logKey.name})`);
    } else {
      failures.push("the checkpoint does not carry a valid signature by the log key you pinned");
    }
    let cosigners = 0;
    for (const text of pins.witnessKeys || []) {
      const witness = await parseKey(text, 0x04);
      if (await cosigned(note, witness)) cosigners++;
    }
    const quorum = pins.quorum || 0;
    const witnessLine =
      `${cosigners} of ${(pins.witnessKeys || []).length} pinned witness(es) cosigned ` +
      `(quorum ${quorum})`;
    (cosigners >= quorum ? passed : failures).push(witnessLine);
    const verified = new Set();
    let bad = 0;
    for (const e of evidence.entries) {
      const leafHash = await sha256(concat(new Uint8Array([0]), b64(e.leaf)));
      const proof = e.proof.map(b64);
      if (await included(leafHash, e.index, size, proof, root)) {
        verified.add(hex(leafHash));
      } else {
        bad++;
        failures.push(`entry ${e.index} is not included in the checkpoint (proof fails)`);
      }
    }
    if (bad === 0) {
      passed.push(`${evidence.entries.length} entries included in the checkpoint's tree`);
    }
    const shown = document.querySelectorAll("[data-leaf-hash]");
    let unverified = 0;
    for (const el of shown) if (!verified.has(el.dataset.leafHash)) unverified++;
    if (unverified) {
      failures.push(`${unverified} statement(s) shown on this page are not in the verified evidence`);
    } else {
      passed.push(`all ${shown.length} statements shown are among them`);
    }
    return { failures, passed };
  }

  function show(state, headline, items) {
    const box = document.getElementById("verification");
    box.className = `verification ${state}`;
    box.querySelector("strong").textContent = headline;
    const list = document.getElementById("verification-details");
    list.replaceChildren(
      ...items.map((text) => {
        const li = document.createElement("li");
        li.textContent = text;
        return li;
      }),
    );
  }

  async function main() {
    let pins;
    try {
      pins = JSON.parse(localStorage.getItem(PINS) || "null");
    } catch (e) {
      pins = null;
    }
    if (!pins || !pins.logKey) {
      show("failed", "Not verified: no log key is pinned in this browser", [
        "Log in again from this browser to pin the log's key.",
      ]);
      return;
    }
    if (!window.crypto || !crypto.subtle) {
      show("failed", "Not verified: this browser offers no WebCrypto here", [
        "Use HTTPS, or reach the console at localhost.",
      ]);
      return;
    }
    try {
      const evidence = JSON.parse(document.getElementById("evidence").textContent);
      const { failures, passed } = await verify(evidence, pins);
      if (failures.length === 0) {
        show("verified", "Verified in your browser", passed);
      } else {
        show("failed", "NOT VERIFIED: what this page shows does not check out", failures);
      }
    } catch (e) {
      show("failed", "NOT VERIFIED: the evidence could not be checked", [String(e.message || e)]);
    }
  }

  main();
})();
