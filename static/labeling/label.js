// The label page's behaviour: keyboard shortcuts, time on task, and small
// touches around htmx's swap of the task. Everything here is an enhancement:
// without it the page still works as plain forms (mouse, Tab, Enter).
// No inline scripts or handlers anywhere: the CSP allows only 'self' scripts.
(function () {
  "use strict";

  var shown = { comparisonId: null, at: 0 };

  function $(selector, root) {
    return (root || document).querySelector(selector);
  }

  function judgmentForm() {
    return document.getElementById("judgment-form");
  }

  function busy() {
    // htmx marks the element whose request is in flight.
    return document.querySelector("form.htmx-request") !== null;
  }

  // -- time on task -----------------------------------------------------------

  function startTask() {
    var task = $("#task .task");
    var id = task ? task.getAttribute("data-comparison-id") : null;
    // The same comparison shown again (a form error) keeps its clock running.
    if (id !== shown.comparisonId) {
      shown.comparisonId = id;
      shown.at = performance.now();
    }
    syncStrength();
  }

  // Capture phase on document: runs before htmx's own submit listener on the
  // form reads the fields, and also before a plain (non-htmx) submission.
  document.addEventListener(
    "submit",
    function (event) {
      var form = event.target;
      if (form.id !== "judgment-form") return;
      var field = form.querySelector("input[name=time_spent_ms]");
      if (field && shown.comparisonId !== null) {
        field.value = String(Math.max(0, Math.round(performance.now() - shown.at)));
      }
    },
    true
  );

  // -- choosing ---------------------------------------------------------------

  function choose(name, value) {
    var form = judgmentForm();
    if (!form) return false;
    var input = form.querySelector('input[name="' + name + '"][value="' + value + '"]');
    if (!input || input.disabled) return false;
    input.checked = true;
    input.dispatchEvent(new Event("change", { bubbles: true }));
    return true;
  }

  function chosenOutcome() {
    var form = judgmentForm();
    var checked = form && form.querySelector('input[name="outcome"]:checked');
    return checked ? checked.value : null;
  }

  // A strength only means something for "left" or "right"; disabled inputs
  // are not posted, so a tie carries no strength.
  function syncStrength() {
    var form = judgmentForm();
    if (!form) return;
    var outcome = chosenOutcome();
    var off = outcome === "tie" || outcome === "both_bad";
    var group = form.querySelector("[data-strength]");
    if (group) group.classList.toggle("is-off", off);
    form.querySelectorAll('input[name="strength"]').forEach(function (input) {
      input.disabled = off;
    });
    var hint = form.querySelector("[data-submit-hint]");
    if (hint && outcome) hint.hidden = true;
  }

  document.addEventListener("change", function (event) {
    if (event.target.name === "outcome") syncStrength();
  });

  function submitJudgment() {
    var form = judgmentForm();
    if (!form || busy()) return;
    if (!chosenOutcome()) {
      var hint = form.querySelector("[data-submit-hint]");
      if (hint) hint.hidden = false;
      var first = form.querySelector('input[name="outcome"]');
      if (first) first.focus();
      return;
    }
    form.requestSubmit();
  }

  function skip() {
    var form = document.getElementById("skip-form");
    if (form && !busy()) form.requestSubmit();
  }

  function toggle(id) {
    var details = document.getElementById(id);
    if (details) details.open = !details.open;
  }

  // -- keyboard ---------------------------------------------------------------

  var OUTCOME_KEYS = { a: "left", arrowleft: "left", d: "right", arrowright: "right", w: "tie", x: "both_bad" };
  var STRENGTH_KEYS = { 1: "1", 2: "2", 3: "3" };

  function isTyping(target) {
    if (!target || !target.closest) return false;
    return target.closest("textarea, select, [contenteditable=''], [contenteditable='true'], input") !== null &&
      !target.matches("input[type=radio], input[type=checkbox]");
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.isComposing || event.altKey) return;
    var target = event.target;
    var key = event.key.toLowerCase();

    if (isTyping(target)) {
      if (key === "escape") {
        target.blur();
        event.preventDefault();
      } else if (key === "enter" && (event.ctrlKey || event.metaKey) && target.closest("#judgment-form")) {
        event.preventDefault();
        submitJudgment();
      }
      return;
    }
    // Leave the browser's own shortcuts (copy, find, reload...) alone.
    if (event.ctrlKey || event.metaKey) {
      if (key === "enter" && judgmentForm()) {
        event.preventDefault();
        submitJudgment();
      }
      return;
    }

    if (key === "?") {
      toggle("shortcuts");
      event.preventDefault();
      return;
    }
    if (key === "g") {
      toggle("guidelines");
      event.preventDefault();
      return;
    }
    if (!judgmentForm()) return;

    // Arrows on a criterion's radio group move within that group, natively.
    var onOtherRadio = target.matches && target.matches("input[type=radio]") &&
      target.name !== "outcome" && target.name !== "strength";
    if ((key === "arrowleft" || key === "arrowright") && onOtherRadio) return;

    if (Object.prototype.hasOwnProperty.call(OUTCOME_KEYS, key)) {
      if (choose("outcome", OUTCOME_KEYS[key])) event.preventDefault();
    } else if (Object.prototype.hasOwnProperty.call(STRENGTH_KEYS, key)) {
      if (choose("strength", STRENGTH_KEYS[key])) event.preventDefault();
    } else if (key === "enter") {
      // Enter on a button, link or summary does what it says natively.
      if (target.closest && target.closest("button, a, summary")) return;
      event.preventDefault();
      submitJudgment();
    } else if (key === "k") {
      event.preventDefault();
      skip();
    } else if (key === "r") {
      var rationale = document.getElementById("rationale");
      if (rationale) {
        event.preventDefault();
        rationale.focus();
      }
    }
  });

  // -- htmx -------------------------------------------------------------------

  function showClientError(message) {
    var box = document.getElementById("client-error");
    if (!box) return;
    box.textContent = message;
    box.hidden = !message;
  }

  function swappedTask(event) {
    return event.detail.target && event.detail.target.id === "task";
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    if (!swappedTask(event)) return;
    showClientError("");
    startTask();
  });

  // After htmx has scrolled the new task to the top: a task shown again with
  // errors scrolls to the first error instead, so the rater sees what to fix.
  document.addEventListener("htmx:afterSettle", function (event) {
    if (!swappedTask(event)) return;
    var error = document.querySelector("#task [data-error], #judgment-form .notice--error");
    if (error) {
      error.scrollIntoView({ block: "center" });
      var group = error.closest("fieldset, .field");
      var input = group && group.querySelector("input:not([type=hidden]), textarea");
      if (input) input.focus({ preventScroll: true });
      return;
    }
    var title = document.getElementById("task-title");
    // Keyboard and screen-reader users land on the new task, not on <body>.
    if (title) title.focus({ preventScroll: true });
  });

  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr ? event.detail.xhr.status : 0;
    showClientError(
      status === 403
        ? "Your answer was refused (403): your session may have expired. Reload the page and sign in again."
        : "The server could not handle that (" + status + "). Nothing was lost on this page: try again, or reload."
    );
  });

  document.addEventListener("htmx:sendError", function () {
    showClientError("Could not reach the server. Check your connection and press Enter again.");
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startTask);
  } else {
    startTask();
  }
})();
