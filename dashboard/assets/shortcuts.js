// Labeling-queue keyboard shortcuts: 1-9 click the n-th class button, S clicks Skip.
// Dash serves every file in assets/ on every page, so this only acts where the buttons exist,
// and never while someone is typing in a field.
document.addEventListener("keydown", function (event) {
  var target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
  var button = null;
  if (/^[1-9]$/.test(event.key)) {
    // Only the shown buttons: an image item hides the tabular classes and shows its own.
    var classes = Array.prototype.filter.call(
      document.querySelectorAll("#labeling-actions button.labeling-class"),
      function (b) { return b.offsetParent !== null; }
    );
    button = classes[parseInt(event.key, 10) - 1] || null;
  } else if (event.key === "s" || event.key === "S") {
    button = document.getElementById("labeling-skip");
  }
  if (button && !button.disabled) {
    event.preventDefault();
    button.click();
  }
});
