// The LSS viewer: uploads a study to POST v1/diagnose and shows the answer (grades, report, evidence images).
// Vanilla JS, no build step, nothing fetched from elsewhere. Server text is only ever set with textContent.
"use strict";

(() => {
  const TOKEN_KEY = "lss.apiToken";
  const SEVERITIES = ["Normal/Mild", "Moderate", "Severe"];
  const API_BASE = new URL("../", window.location.href); // the viewer lives at <prefix>/viewer/
  const $ = (id) => document.getElementById(id);

  let generation = 0;   // bumped by each upload: late images of an older study are dropped
  let blobUrls = [];    // object URLs of the evidence images shown, revoked on the next upload
  let viewSteps = [];   // what each position of the level slider shows
  let slices = { urls: [], segmented: null, masked: null }; // the sagittal slice slider

  // ------------------------------------------------------------------------------------------------ helpers
  function apiUrl(path) {
    return new URL(String(path).replace(/^\/+/, ""), API_BASE).href;
  }

  function authHeaders() {
    const token = $("token-input").value.trim();
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  function el(tag, attrs = {}, text = null) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    if (text !== null && text !== undefined) node.textContent = String(text);
    return node;
  }

  function fmt(value, digits) {
    return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
  }

  // A level without a stated grade shows why (not assessable / withheld), never the model's guess.
  function gradeText(level) {
    if (level.severity) return level.severity;
    return level.status === "withheld" ? "grade withheld" : "not assessable";
  }

  function severityClass(severity) {
    if (!severity) return "sev-none";
    return "sev-" + String(severity).toLowerCase().replace(/[^a-z]+/g, "-");
  }

  function setStatus(state, text, fraction) {
    const status = $("status");
    status.dataset.state = state;
    status.textContent = text;
    const progress = $("progress");
    progress.hidden = fraction === undefined;
    if (fraction === null) progress.removeAttribute("value"); // indeterminate: processing
    else if (fraction !== undefined) progress.value = fraction;
  }

  function showError(code, message) {
    $("error-code").textContent = code;
    $("error-message").textContent = message;
    $("error").hidden = false;
  }

  // ------------------------------------------------------------------------------------------------ upload
  function upload(files) {
    generation += 1;
    $("error").hidden = true;
    $("result").hidden = true;
    blobUrls.forEach((url) => URL.revokeObjectURL(url));
    blobUrls = [];

    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    const names = files.map((f) => f.name).join(", ");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", apiUrl("v1/diagnose?dicom=true")); // the DICOM outputs are made only when asked for
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => {
      if (!event.lengthComputable) return;
      const fraction = event.loaded / event.total;
      setStatus("uploading", `Uploading ${names}: ${Math.round(100 * fraction)}%`, fraction);
    };
    let ticker = null;
    const started = performance.now();
    const processing = () => {
      const seconds = Math.round((performance.now() - started) / 1000);
      setStatus("processing", `Processing: preprocessing, segmentation, grading and report… ${seconds} s`, null);
    };
    xhr.upload.onload = () => {
      processing();
      ticker = setInterval(processing, 1000);
    };
    xhr.onloadend = () => clearInterval(ticker);
    xhr.onload = () => {
      $("upload-input").disabled = false;
      $("upload-input").value = "";
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (_) {
        body = null;
      }
      if (xhr.status === 200 && body && Array.isArray(body.levels)) {
        render(body);
        const seconds = fmt(body.timings_s && body.timings_s.total, 1);
        setStatus("done", `Done: ${body.levels.length} levels graded in ${seconds} s.`);
        return;
      }
      let code = `http_${xhr.status}`;
      let message = xhr.statusText || "the server gave no reason.";
      if (body && typeof body.code === "string") {
        code = body.code;
        message = String(body.message);
      } else if (body && body.detail !== undefined) {
        message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      }
      if (xhr.status === 401) message += " Enter the API token above.";
      setStatus("error", `Failed (HTTP ${xhr.status}).`);
      showError(code, message);
    };
    xhr.onerror = () => {
      $("upload-input").disabled = false;
      setStatus("error", "Failed: no answer from the server.");
      showError("network_error", "the server could not be reached.");
    };
    $("upload-input").disabled = true;
    setStatus("uploading", `Uploading ${names}: 0%`, 0);
    xhr.send(form);
  }

  // ------------------------------------------------------------------------------------------------ images
  // Evidence is rendered by the server on first request: fetch one image at a time, the sagittal view first.
  const queue = [];
  let loading = false;

  function loadImage(img, url) {
    // A newer request for the same <img> (a slider moved on) replaces any still waiting.
    for (let i = queue.length - 1; i >= 0; i -= 1) if (queue[i].img === img) queue.splice(i, 1);
    img.removeAttribute("src");
    img.dataset.loaded = "pending";
    queue.push({ img, url, gen: generation });
    pump();
  }

  async function pump() {
    if (loading) return;
    loading = true;
    while (queue.length) {
      const { img, url, gen } = queue.shift();
      if (gen !== generation) continue;
      try {
        const response = await fetch(apiUrl(url), { headers: authHeaders() });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const blob = await response.blob();
        if (gen !== generation) continue;
        const objectUrl = URL.createObjectURL(blob);
        blobUrls.push(objectUrl);
        img.onload = () => { img.dataset.loaded = "true"; };
        img.src = objectUrl;
      } catch (error) {
        img.dataset.loaded = "failed";
        img.alt = `image not available (${error.message})`;
      }
    }
    loading = false;
  }

  // ------------------------------------------------------------------------------------------------ render
  function render(body) {
    $("request-id").textContent = body.request_id;
    $("model-version").textContent = body.model_version;
    $("writer").textContent = body.writer;
    $("has-axial").textContent = body.has_axial ? "yes" : "no (graded on the sagittal view: lower confidence)";
    $("timing").textContent = `${fmt(body.timings_s && body.timings_s.total, 2)} s`;
    $("notes").replaceChildren(...(body.notes || []).map((note) => el("li", {}, note)));
    renderDicomLinks(body.dicom || {});

    renderGrades(body.levels);
    renderReport(body.sentences || []);
    renderEvidence(body);
    $("result").hidden = false;
  }

  // The DICOM outputs need the token too: fetched, then saved from a blob URL.
  function renderDicomLinks(dicom) {
    const names = Object.keys(dicom);
    const buttons = names.map((name) => {
      const button = el("button", { type: "button", class: "dicom-link", "data-dicom": name }, `${name}.dcm`);
      button.addEventListener("click", async () => {
        try {
          const response = await fetch(apiUrl(dicom[name]), { headers: authHeaders() });
          if (!response.ok) {
            const problem = await response.json().catch(() => ({}));
            showError(problem.code || `http_${response.status}`, problem.message || response.statusText);
            return;
          }
          const url = URL.createObjectURL(await response.blob());
          blobUrls.push(url);
          const link = el("a", { href: url, download: `${name}.dcm` });
          link.click();
        } catch (error) {
          showError("network_error", error.message);
        }
      });
      return button;
    });
    $("dicom-links").replaceChildren(...(buttons.length ? buttons
      : [document.createTextNode("none (not a DICOM upload)")]));
  }

  function renderGrades(levels) {
    const rows = levels.map((level) => {
      const m = level.measurements || {};
      const p = level.probabilities || {};
      const row = el("tr", { "data-level": level.level });
      row.append(el("th", { class: "level", scope: "row" }, level.level));
      const grade = el("td", { class: "grade-cell" });
      grade.append(el("span", { class: `grade ${severityClass(level.severity)}` }, gradeText(level)));
      row.append(grade);
      for (const severity of SEVERITIES) {
        row.append(el("td", { class: "prob", "data-severity": severity },
          p[severity] === undefined ? "–" : `${(100 * p[severity]).toFixed(1)}%`));
      }
      row.append(el("td", { class: "rule" }, level.rule_severity || "–"));
      row.append(el("td", { class: "area num" }, fmt(m.area_mm2, 0)));
      row.append(el("td", { class: "ap num" }, fmt(m.ap_mm, 1)));
      row.append(el("td", { class: "sag-ap num" }, fmt(m.sagittal_ap_mm, 1)));
      row.append(el("td", { class: "disc num" }, fmt(m.disc_height_mm, 1)));
      const flags = el("td", { class: "flags" });
      if (level.review) flags.append(el("span", { class: "flag review" }, `review: ${level.review_reason}`));
      if (level.status === "withheld" && level.withheld_reason && level.withheld_reason !== level.review_reason) {
        flags.append(el("span", { class: "flag withheld" }, `withheld: ${level.withheld_reason}`));
      }
      if (level.lower_confidence) flags.append(el("span", { class: "flag lower" }, "lower confidence: no axial"));
      if (level.assessable === false) {
        flags.append(el("span", { class: "flag not-assessable" },
          `not assessable: ${(level.not_assessable_reasons || []).join("; ")}`));
      }
      row.append(flags);
      row.addEventListener("click", () => highlight([level.level]));
      return row;
    });
    $("grades-body").replaceChildren(...rows);
  }

  function renderReport(sentences) {
    const container = $("report");
    container.replaceChildren();
    let list = null;
    let section = null;
    for (const sentence of sentences) {
      if (sentence.section !== section) {
        section = sentence.section;
        container.append(el("h3", {}, section));
        list = el("ol", { class: "sentences" });
        container.append(list);
      }
      const levels = sentence.levels || [];
      const item = el("li", {
        class: "sentence", "data-testid": "sentence", "data-section": sentence.section,
        "data-levels": levels.join(","),
      }, sentence.text);
      if (levels.length) {
        item.classList.add("linked");
        item.tabIndex = 0;
        item.setAttribute("role", "button");
        item.title = `Show the evidence of ${levels.join(", ")}`;
        const activate = () => {
          document.querySelectorAll(".sentence.active").forEach((n) => n.classList.remove("active"));
          item.classList.add("active");
          highlight(levels);
        };
        item.addEventListener("click", activate);
        item.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") { event.preventDefault(); activate(); }
        });
      }
      list.append(item);
    }
  }

  function figure(imageId, url, caption) {
    const fig = el("figure", { "data-image": imageId });
    const img = el("img", { alt: caption });
    fig.append(img, el("figcaption", {}, caption));
    if (url) loadImage(img, url);
    else img.dataset.loaded = "missing";
    return fig;
  }

  function renderEvidence(body) {
    const images = body.images || {};
    renderSlices(body);

    const cards = body.levels.map((level) => {
      const evidence = level.evidence || {};
      const card = el("section", { class: "evidence-card", "data-level": level.level });
      const title = el("h3", {}, `${level.level}: `);
      title.append(el("span", { class: `grade ${severityClass(level.severity)}` }, gradeText(level)));
      card.append(title);
      const axial = Object.keys(evidence).find((id) => id.startsWith("axial_"));
      const attention = Object.keys(evidence).find((id) => id.startsWith("attention_"));
      card.append(figure(axial || "", axial && evidence[axial], "Axial slice, dural sac contour"));
      card.append(figure(attention || "", attention && evidence[attention],
        `Attention of the prompt "${level.level}"`));
      card.addEventListener("click", () => highlight([level.level]));
      return card;
    });
    $("level-cards").replaceChildren(...cards);

    // The level slider steps through the levels (their axial slice and attention map).
    viewSteps = [{ label: "all levels", show: () => highlight([], false) }].concat(
      body.levels.map((level) => ({ label: level.level, show: () => highlight([level.level], true, false) })));
    const slider = $("view-slider");
    slider.max = String(viewSteps.length - 1);
    slider.value = "0";
    slider.disabled = viewSteps.length < 2;
    $("view-label").textContent = viewSteps[0].label;
  }

  // The slice slider: every slice of the sagittal crop; the segmented one is the evidence image with the masks.
  function renderSlices(body) {
    const urls = body.sagittal_slices || [];
    const segmented = Number.isInteger(body.sagittal_slice) ? body.sagittal_slice : null;
    slices = { urls, segmented, masked: (body.images || {}).sagittal || null };
    const slider = $("slice-slider");
    slider.max = String(Math.max(urls.length - 1, 0));
    slider.value = String(segmented === null ? 0 : segmented);
    slider.disabled = urls.length < 2;
    showSlice(Number(slider.value));
  }

  function showSlice(k) {
    const segmentedHere = k === slices.segmented || !slices.urls.length;
    const url = segmentedHere && slices.masked ? slices.masked : slices.urls[k];
    $("slice-label").textContent = slices.urls.length
      ? `slice ${k} of ${slices.urls.length - 1}${segmentedHere ? " (segmented)" : ""}` : "";
    $("sagittal-caption").textContent = segmentedHere
      ? "Mid-sagittal slice with the predicted vertebral bodies, posterior elements, discs and canal."
      : `Sagittal slice ${k}: the image alone (the model segments slice ${slices.segmented}).`;
    if (url) loadImage($("sagittal-image"), url);
  }

  // Marks the levels' table rows and evidence cards, and brings the first card into view.
  function highlight(levels, scroll = true, moveSlider = true) {
    document.querySelectorAll("[data-level].highlight").forEach((n) => n.classList.remove("highlight"));
    for (const level of levels) {
      document.querySelectorAll(`[data-level="${CSS.escape(level)}"]`).forEach((n) => n.classList.add("highlight"));
    }
    if (moveSlider && viewSteps.length > 1 && levels.length === 1) {
      const index = viewSteps.findIndex((step) => step.label === levels[0]);
      if (index > 0) {
        $("view-slider").value = String(index);
        $("view-label").textContent = levels[0];
      }
    }
    if (scroll && levels.length) {
      const card = document.querySelector(`.evidence-card[data-level="${CSS.escape(levels[0])}"]`);
      if (card) card.scrollIntoView({ behavior: "smooth", block: "nearest" });
    }
  }

  // ------------------------------------------------------------------------------------------------ wiring
  document.addEventListener("DOMContentLoaded", () => {
    const token = $("token-input");
    token.value = sessionStorage.getItem(TOKEN_KEY) || "";
    token.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, token.value.trim()));
    $("upload-input").addEventListener("change", (event) => {
      const files = Array.from(event.target.files || []);
      if (files.length) upload(files);
    });
    $("slice-slider").addEventListener("input", (event) => showSlice(Number(event.target.value)));
    $("view-slider").addEventListener("input", (event) => {
      const step = viewSteps[Number(event.target.value)];
      if (!step) return;
      $("view-label").textContent = step.label;
      step.show();
    });
  });
})();
