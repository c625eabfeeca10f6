{% raw %}
// The feature table: rows from the embedded JSON, filtered by the search box, sorted by the
// clicked column. Cells are set as text, never as HTML. At most SHOWN rows are in the page at
// once (a table of 60,000 rows would freeze a phone); the CSV has them all.
(function () {
  "use strict";
  var SHOWN = 500;
  var COLUMNS = ["rank", "name", "view", "status", "score", "change"];
  var rows = JSON.parse(document.getElementById("feature-data").textContent);
  var body = document.querySelector("#feature-table tbody");
  var search = document.getElementById("feature-search");
  var count = document.getElementById("feature-count");
  var sortBy = "rank", ascending = true;

  function compare(a, b) {
    var x = a[sortBy], y = b[sortBy];
    var order = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
    return (ascending ? order : -order) || a.rank - b.rank;
  }

  function matching() {
    var words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    return rows.filter(function (row) {
      var text = [row.name, row.view, row.status, row.change].join(" ").toLowerCase();
      return words.every(function (word) { return text.indexOf(word) >= 0; });
    });
  }

  function cell(tr, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    tr.appendChild(td);
  }

  function render() {
    var found = matching().sort(compare);
    var fragment = document.createDocumentFragment();
    found.slice(0, SHOWN).forEach(function (row) {
      var tr = document.createElement("tr");
      tr.className = row.status.replace(/\s+/g, "-");
      cell(tr, row.rank, "num");
      cell(tr, row.name, "name");
      cell(tr, row.view);
      cell(tr, row.status);
      cell(tr, row.score_text, "num");
      cell(tr, row.change);
      fragment.appendChild(tr);
    });
    body.replaceChildren(fragment);
    var shown = Math.min(found.length, SHOWN);
    count.textContent = (shown < found.length ? "showing " + shown + " of " : "") +
      found.length + " of " + rows.length + " features";
    document.querySelectorAll("#feature-table th button").forEach(function (button) {
      var on = button.dataset.column === sortBy;
      button.parentElement.setAttribute("aria-sort", on ? (ascending ? "ascending" : "descending") : "none");
    });
  }

  function csvField(value) {
    var text = String(value);
    return /[",\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  document.querySelectorAll("#feature-table th button").forEach(function (button) {
    button.addEventListener("click", function () {
      var column = button.dataset.column;
      ascending = column === sortBy ? !ascending : column !== "score";
      sortBy = column;
      render();
    });
  });
  search.addEventListener("input", render);
  // The CSV is made here from the same rows, so the link works in a page mailed on its own.
  var lines = [COLUMNS.join(",")].concat(rows.map(function (row) {
    return COLUMNS.map(function (c) { return csvField(row[c]); }).join(",");
  }));
  var blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
  document.getElementById("feature-csv").href = URL.createObjectURL(blob);
  render();
})();
{% endraw %}
