// Pins, in this browser, the keys the investigator trusts: every action page re-verifies its
// evidence against these (static/verify.js), whatever the server says. The token is not kept.
"use strict";

document.getElementById("login").addEventListener("submit", () => {
  const witnessKeys = document
    .getElementById("witness_keys")
    .value.split("\n")
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
  const pins = {
    logKey: document.getElementById("log_key").value.trim(),
    witnessKeys,
    quorum: Number(document.getElementById("quorum").value || 0),
  };
  localStorage.setItem("affidavit.console.pins", JSON.stringify(pins));
});
