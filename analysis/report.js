(function () {
  "use strict";
  function num(text) {
    var m = String(text).replace(/,/g, "").match(/[-+]?\d*\.?\d+(e[-+]?\d+)?/i);
    return m ? parseFloat(m[0]) : NaN;
  }
  function rowsOf(t) { return Array.prototype.slice.call(t.tBodies[0].rows); }
  function csvCell(s) { s = String(s); return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }
  function setupTable(t, ti) {
    var heads = Array.prototype.slice.call(t.tHead.rows[0].cells);
    var bar = document.createElement("div");
    bar.className = "tools";
    var filter = document.createElement("input");
    filter.type = "search"; filter.placeholder = "filter rows (all words must match)"; filter.className = "filter";
    bar.appendChild(filter);
    var groups = [];
    heads.forEach(function (h) { var g = h.dataset.group; if (g && g !== "label" && groups.indexOf(g) < 0) groups.push(g); });
    groups.forEach(function (g) {
      var lab = document.createElement("label");
      var box = document.createElement("input");
      box.type = "checkbox"; box.checked = true; box.dataset.group = g;
      box.addEventListener("change", function () {
        heads.forEach(function (h, i) {
          if (h.dataset.group !== g) return;
          var show = box.checked ? "" : "none";
          h.style.display = show;
          rowsOf(t).forEach(function (r) { if (r.cells[i]) r.cells[i].style.display = show; });
        });
      });
      lab.appendChild(box); lab.appendChild(document.createTextNode(" " + g));
      bar.appendChild(lab);
    });
    var dl = document.createElement("button");
    dl.type = "button"; dl.textContent = "CSV of the rows shown";
    dl.addEventListener("click", function () {
      var shown = heads.map(function (h, i) { return h.style.display === "none" ? -1 : i; }).filter(function (i) { return i >= 0; });
      var lines = [shown.map(function (i) { return csvCell(heads[i].textContent); }).join(",")];
      rowsOf(t).forEach(function (r) {
        if (r.style.display === "none") return;
        lines.push(shown.map(function (i) { return csvCell(r.cells[i] ? r.cells[i].textContent : ""); }).join(","));
      });
      var a = document.createElement("a");
      a.href = "data:text/csv;charset=utf-8," + encodeURIComponent(lines.join("\n") + "\n");
      a.download = "table_" + (ti + 1) + ".csv";
      document.body.appendChild(a); a.click(); a.remove();
    });
    bar.appendChild(dl);
    t.parentNode.parentNode.insertBefore(bar, t.parentNode);
    filter.addEventListener("input", function () {
      var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
      rowsOf(t).forEach(function (r) {
        var text = r.textContent.toLowerCase();
        r.style.display = words.every(function (w) { return text.indexOf(w) >= 0; }) ? "" : "none";
      });
    });
    heads.forEach(function (h, i) {
      h.classList.add("sortable");
      h.addEventListener("click", function () {
        var asc = h.dataset.sort !== "asc";
        heads.forEach(function (o) { delete o.dataset.sort; });
        h.dataset.sort = asc ? "asc" : "desc";
        var rows = rowsOf(t);
        var cellsOf = rows.map(function (r) { return r.cells[i] ? r.cells[i].textContent.trim() : ""; });
        // a label column sorts as numbers only when every cell is one (LR 1e-03, steps); else in
        // natural order, so r=4 comes before r=16; a figure column by the number it shows
        var bare = cellsOf.filter(function (c) { return c && c !== "-" && c !== "–"; });
        var label = h.dataset.group === "label";
        var plain = bare.length > 0 && bare.every(function (c) { return /^[-+]?\d*\.?\d+(e[-+]?\d+)?$/i.test(c.replace(/,/g, "")); });
        var numeric = label ? plain : rows.some(function (r) { return !isNaN(num(r.cells[i] ? r.cells[i].textContent : "")); });
        rows.sort(function (a, b) {
          var x = a.cells[i] ? a.cells[i].textContent : "", y = b.cells[i] ? b.cells[i].textContent : "";
          if (numeric) {
            var p = label ? parseFloat(x.replace(/,/g, "")) : num(x), q = label ? parseFloat(y.replace(/,/g, "")) : num(y);
            if (isNaN(p) && isNaN(q)) return 0;
            if (isNaN(p)) return 1;  // no figure: last, either way
            if (isNaN(q)) return -1;
            return asc ? p - q : q - p;
          }
          var c = x.localeCompare(y, undefined, {numeric: true});
          return asc ? c : -c;
        });
        rows.forEach(function (r) { t.tBodies[0].appendChild(r); });
      });
    });
  }
  document.querySelectorAll("table.data").forEach(setupTable);

  // Pareto plots: any two measured columns, hover in words, the front in each axis's own direction
  var SVGNS = "http://www.w3.org/2000/svg";
  function el(tag, attrs, parent) {
    var e = document.createElementNS(SVGNS, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(e);
    return e;
  }
  function front(points, dx, dy) {
    // undominated points: no other is at least as good on both axes and better on one
    var keep = points.filter(function (p) {
      return !points.some(function (q) {
        var gx = dx * (q.x - p.x), gy = dy * (q.y - p.y);
        return gx >= 0 && gy >= 0 && (gx > 0 || gy > 0);
      });
    });
    return keep.sort(function (a, b) { return a.x - b.x; });
  }
  function fmt(v) { return Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : +v.toPrecision(4) + ""; }
  function setupPlot(box) {
    var data = JSON.parse(box.querySelector("script").textContent);
    var cols = data.columns, rows = data.rows;
    var selX = box.querySelector("select.x"), selY = box.querySelector("select.y");
    cols.forEach(function (c, i) {
      [selX, selY].forEach(function (s) { var o = document.createElement("option"); o.value = i; o.textContent = c.label; s.appendChild(o); });
    });
    selX.value = data.x; selY.value = data.y;
    var svg = box.querySelector("svg"), tip = box.querySelector(".tip");
    function draw() {
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      var cx = cols[+selX.value], cy = cols[+selY.value];
      var pts = rows.map(function (r) { return {x: r.values[+selX.value], y: r.values[+selY.value], r: r}; })
                    .filter(function (p) { return p.x !== null && p.y !== null && isFinite(p.x) && isFinite(p.y); });
      var W = 640, H = 400, L = 70, R = 20, T = 20, B = 50;
      el("rect", {x: 0, y: 0, width: W, height: H, fill: "#fff"}, svg);
      if (!pts.length) { el("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, svg).textContent = "no run has both figures"; return; }
      var xs = pts.map(function (p) { return p.x; }), ys = pts.map(function (p) { return p.y; });
      var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
      if (x0 === x1) { x0 -= 1; x1 += 1; } if (y0 === y1) { y0 -= 1; y1 += 1; }
      var px = function (v) { return L + (v - x0) / (x1 - x0) * (W - L - R); };
      var py = function (v) { return H - B - (v - y0) / (y1 - y0) * (H - T - B); };
      el("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#444"}, svg);
      el("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#444"}, svg);
      [0, 0.5, 1].forEach(function (f) {
        el("text", {x: px(x0 + f * (x1 - x0)), y: H - B + 16, "text-anchor": "middle", "font-size": 11}, svg).textContent = fmt(x0 + f * (x1 - x0));
        el("text", {x: L - 6, y: py(y0 + f * (y1 - y0)) + 4, "text-anchor": "end", "font-size": 11}, svg).textContent = fmt(y0 + f * (y1 - y0));
      });
      el("text", {x: (L + W - R) / 2, y: H - 10, "text-anchor": "middle", "font-size": 12}, svg).textContent =
        cx.label + (cx.direction ? " (" + (cx.direction === "max" ? "higher" : "lower") + " is better)" : "");
      el("text", {x: 14, y: (T + H - B) / 2, "text-anchor": "middle", "font-size": 12, transform: "rotate(-90 14 " + (T + H - B) / 2 + ")"}, svg)
        .textContent = cy.label + (cy.direction ? " (" + (cy.direction === "max" ? "higher" : "lower") + " is better)" : "");
      if (cx.direction && cy.direction) {
        var f = front(pts, cx.direction === "max" ? 1 : -1, cy.direction === "max" ? 1 : -1);
        el("polyline", {points: f.map(function (p) { return px(p.x) + "," + py(p.y); }).join(" "), fill: "none",
                        stroke: "#888", "stroke-dasharray": "4 3", "class": "front"}, svg);
      }
      pts.forEach(function (p) {
        var c = el("circle", {cx: px(p.x), cy: py(p.y), r: 5, fill: p.r.color, stroke: "#222", "stroke-width": 0.5, "class": "point"}, svg);
        var words = p.r.label + "\n" + cx.label + ": " + fmt(p.x) + "\n" + cy.label + ": " + fmt(p.y);
        el("title", {}, c).textContent = words;
        c.addEventListener("mouseenter", function () { tip.textContent = words; });
      });
    }
    selX.addEventListener("change", draw); selY.addEventListener("change", draw);
    draw();
  }
  document.querySelectorAll(".pareto").forEach(setupPlot);
})();
