// Labeling-queue keyboard shortcuts: a class button's key (its data-key, shown on the button:
// the class itself for digit classes 0-9, else 1-9 in order) clicks it; S clicks Skip.
// Dash serves every file in assets/ on every page, so this only acts where the buttons exist,
// and never while someone is typing in a field.
document.addEventListener("keydown", function (event) {
  var target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
  var button = null;
  if (/^[0-9]$/.test(event.key)) {
    // Only the shown buttons: an image item hides the tabular classes and shows its own.
    var keyed = document.querySelectorAll(
      '#labeling-actions button.labeling-class[data-key="' + event.key + '"]'
    );
    button = Array.prototype.find.call(keyed, function (b) { return b.offsetParent !== null; }) || null;
  } else if (event.key === "s" || event.key === "S") {
    button = document.getElementById("labeling-skip");
  }
  if (button && !button.disabled) {
    event.preventDefault();
    button.click();
  }
});
