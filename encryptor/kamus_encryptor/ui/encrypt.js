// The encrypt page: the form's values go to this Kamus's own encrypt API (same origin) and
// nowhere else. No HTML is built from strings: the Content-Security-Policy requires Trusted Types.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("encrypt-form");
  const status = $("status");
  let ciphertext = "";

  function say(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  // Single quotes keep a shell from expanding anything; a quote inside is closed and escaped.
  function shellQuote(value) {
    return "'" + value.replace(/'/g, "'\\''") + "'";
  }

  // A YAML double-quoted scalar (JSON's string syntax is valid YAML).
  function yamlString(value) {
    return JSON.stringify(value);
  }

  function renderSnippets() {
    const namespace = $("namespace").dataset.encrypted || "";
    const name = $("configmap").value.trim() || "encrypted-secrets";
    const key = $("key").value.trim() || "secret";
    $("ciphertext").textContent = ciphertext;
    $("kubectl").textContent =
      "kubectl create configmap " + shellQuote(name) + " --namespace " + shellQuote(namespace) +
      " \\\n  --from-literal=" + shellQuote(key + "=" + ciphertext);
    $("manifest").textContent = [
      "apiVersion: v1",
      "kind: ConfigMap",
      "metadata:",
      "  name: " + yamlString(name),
      "  namespace: " + yamlString(namespace),
      "data:",
      "  " + yamlString(key) + ": " + yamlString(ciphertext),
    ].join("\n");
  }

  async function explain(response) {
    try {
      const body = await response.json();
      if (body && typeof body.message === "string") {
        const code = typeof body.error === "string" ? " " + body.error : "";
        return body.message + " (" + response.status + code + ")";
      }
    } catch (ignored) {
      // not a Kamus JSON error: say what the status says
    }
    return "Kamus answered " + response.status + " " + response.statusText;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!form.reportValidity()) {
      return;
    }
    const namespace = $("namespace").value.trim();
    const serviceAccount = $("service-account").value.trim();
    const secret = $("secret").value;
    const body = { data: secret, namespace, "service-account": serviceAccount };
    const others = $("sealing-keys").value.split("\n").map((line) => line.trim()).filter(Boolean);
    if (others.length > 0) {
      body["sealing-keys"] = others;
    }
    $("encrypt").disabled = true;
    say("Encrypting…", false);
    let response;
    try {
      // Several clusters: sealed to this one's and the others' sealing keys (POST /api/v1/seal).
      response = await fetch(others.length > 0 ? "api/v1/seal" : "api/v1/encrypt", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/plain" },
        body: JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
        referrerPolicy: "no-referrer",
      });
    } catch (error) {
      $("encrypt").disabled = false;
      say("Kamus could not be reached: " + error.message, true);
      return;
    }
    $("encrypt").disabled = false;
    if (!response.ok) {
      say(await explain(response), true);
      return;
    }
    ciphertext = (await response.text()).trim();
    $("namespace").dataset.encrypted = namespace;
    $("secret").value = "";
    renderSnippets();
    $("result").hidden = false;
    const where = others.length > 0 ? " in this cluster and " + others.length + " other(s)" : "";
    say("Encrypted for " + namespace + "/" + serviceAccount + where +
        ". The secret was cleared from the page.", false);
  });

  // Over plain HTTP (other than to this machine) the secret would cross the network readable.
  if (!window.isSecureContext) {
    $("insecure").hidden = false;
  }

  for (const id of ["configmap", "key"]) {
    $(id).addEventListener("input", renderSnippets);
  }

  async function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    // Plain-HTTP pages have no Clipboard API: copy through a selection.
    const area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    if (!copied) {
      throw new Error("the browser refused to copy");
    }
  }

  for (const button of document.querySelectorAll("button.copy")) {
    button.addEventListener("click", async () => {
      try {
        await copy($(button.dataset.copy).textContent);
        button.textContent = "Copied";
      } catch (error) {
        button.textContent = "Copy failed";
        say("Copy failed: " + error.message + "; select the text instead.", true);
      }
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    });
  }
})();
