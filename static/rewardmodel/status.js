// The status page's live training panel: while a training runs or a retrain is
// pending, poll the training endpoint and move the progress bar, step, loss and
// time left. When a version finishes (or a new one starts) the page reloads
// once to show the new row, chart and metrics; when nothing is running or
// pending, it stops polling. No inline scripts: the CSP allows only 'self'.
(function () {
  "use strict";

  var root = document.getElementById("rm-live");
  if (!root || root.getAttribute("data-busy") !== "true") {
    return; // idle: nothing to watch
  }

  var TRAINING_EVERY_MS = 2000;
  var WAITING_EVERY_MS = 5000; // only pending: the start of a training is not urgent
  var MAX_BACKOFF_MS = 30000;
  var UNFINISHED = { queued: true, training: true };

  var url = root.getAttribute("data-poll-url");
  var shown = {
    version: root.getAttribute("data-latest-version") || "",
    status: root.getAttribute("data-latest-status") || "",
    training: root.getAttribute("data-training") === "true",
  };
  var timer = null;
  var failures = 0;
  var stopped = false;
  var inFlight = false;

  function field(name) {
    return root.querySelector('[data-field="' + name + '"]');
  }

  function setText(name, text) {
    var el = field(name);
    if (el && el.textContent !== text) {
      el.textContent = text;
    }
  }

  // The same words as rewardmodel.status.eta_text on the server.
  function etaText(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 60) return "under a minute left";
    if (seconds < 90 * 60) return "about " + Math.round(seconds / 60) + " min left";
    return "about " + (seconds / 3600).toFixed(1) + " h left";
  }

  function showTraining(training) {
    var version = training.version;
    var progress = version.progress;
    var bar = field("bar");
    if (bar) {
      if (progress.total > 0) {
        bar.max = progress.total;
        bar.value = progress.step;
      } else {
        bar.removeAttribute("value"); // indeterminate until the step count is known
      }
    }
    setText("status", version.status_label);
    if (progress.total > 0) {
      setText("steps", "Step " + progress.step + " of " + progress.total);
    } else {
      setText("steps", version.status === "queued" ? "Waiting for a worker" : "Reading the judgments");
    }
    setText("percent", training.percent === null ? "" : "(" + training.percent + "%)");
    setText("loss", progress.loss === null ? "" : "· loss " + progress.loss.toFixed(4));
    var eta = etaText(training.eta_seconds);
    setText("eta", eta ? "· " + eta : "");
  }

  function apply(data) {
    var latest = data.latest;
    var version = latest ? String(latest.version) : "";
    var status = latest ? latest.status : "";
    var sameRunGoesOn = version === shown.version && UNFINISHED[status] && UNFINISHED[shown.status];
    if (version !== shown.version || (status !== shown.status && !sameRunGoesOn)) {
      // A version finished, failed or appeared: the history, chart and metrics changed.
      stopped = true;
      setText("connection", "The model changed; updating the page…");
      window.location.reload();
      return;
    }
    if (data.training && shown.training) {
      showTraining(data.training);
      shown.status = status;
    }
    if (!data.busy) {
      stopped = true; // idle now: nothing left to watch
      return;
    }
    schedule(data.training ? TRAINING_EVERY_MS : WAITING_EVERY_MS);
  }

  function schedule(ms) {
    if (!stopped) {
      timer = window.setTimeout(poll, ms);
    }
  }

  function poll() {
    timer = null;
    if (document.hidden) {
      return; // resumed by visibilitychange: no polling from a background tab
    }
    inFlight = true;
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        inFlight = false;
        failures = 0;
        setText("connection", "");
        apply(data);
      })
      .catch(function () {
        inFlight = false;
        failures += 1;
        setText("connection", "Lost contact with the server; trying again…");
        schedule(Math.min(MAX_BACKOFF_MS, TRAINING_EVERY_MS * Math.pow(2, failures)));
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && !stopped && !inFlight && timer === null) {
      poll();
    }
  });

  schedule(shown.training ? TRAINING_EVERY_MS : WAITING_EVERY_MS);
})();
