// farm dashboard: live previews in the media's own form (see farm/preview.py for the kinds).
"use strict";

(function previews() {
  const { api, el, showError } = farm;
  let current = null;  // { id, container, kind, view }

  // An image fetched (so that a 204 is told from an error without a console error), shown through a blob URL.
  // Resolves true when it has content, false while it is not there yet (204).
  async function loadImage(img, url) {
    const response = await fetch(farm.url(url),
      { headers: farm.headers(), cache: "no-store", credentials: "omit" });
    if (response.status === 204) return false;
    if (!response.ok) throw new Error(`GET ${url}: ${response.status}`);
    const blob = await response.blob();
    const src = URL.createObjectURL(blob);
    await new Promise((resolve, reject) => {
      img.onload = resolve;
      img.onerror = () => reject(new Error(`${url} is not an image`));
      img.src = src;
    }).finally(() => setTimeout(() => URL.revokeObjectURL(src), 0));
    return true;
  }

  const base = (id) => "api/v1/projects/" + encodeURIComponent(id);
  const filePath = (id, name) => `${base(id)}/files/${name.split("/").map(encodeURIComponent).join("/")}`;

  // -- map tiles: a Leaflet slippy map whose missing tiles are asked for again as jobs finish -----

  const FarmTiles = L.TileLayer.extend({
    createTile(coords, done) {
      const img = el("img", { alt: "", role: "presentation" });
      img.dataset.url = this.getTileUrl(coords);
      this._farmLoad(img, done);
      return img;
    },
    _farmLoad(img, done) {
      if (img.dataset.loading) return;
      img.dataset.loading = "1";
      loadImage(img, img.dataset.url).then((loaded) => {
        img.classList.toggle("farm-tile-loaded", loaded);
        img.classList.toggle("farm-tile-pending", !loaded);
        done(null, img);
      }, (error) => done(error, img)).finally(() => { delete img.dataset.loading; });
    },
    refreshPending() {
      for (const tile of Object.values(this._tiles)) {
        if (tile.el.classList.contains("farm-tile-pending")) this._farmLoad(tile.el, () => {});
      }
    },
  });

  const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

  function tiles(view, d) {
    if (!view.map) {
      const box = el("div", { class: "map", id: "preview-map" });
      view.root.replaceChildren(box, el("p", { class: "caption" }));
      const bounds = L.latLngBounds([[clampLat(d.bounds[1]), d.bounds[0]], [clampLat(d.bounds[3]), d.bounds[2]]]);
      view.map = L.map(box, { minZoom: d.minzoom, maxZoom: d.maxzoom + 2, worldCopyJump: false });
      // the project's attribution is its author's text: shown as text, never as HTML
      view.map.attributionControl.setPrefix('<a href="https://leafletjs.com">Leaflet</a>');
      view.layer = new FarmTiles(`${base(view.id)}/tiles/{z}/{x}/{y}.png`, {
        minZoom: d.minzoom, maxZoom: d.maxzoom + 2, maxNativeZoom: d.maxzoom, tileSize: 256,
        bounds, noWrap: true, attribution: d.attribution ? escapeHtml(d.attribution) : "",
        keepBuffer: 1, updateWhenZooming: false,
      }).addTo(view.map);
      // one zoom closer than the whole bounds: the map fills its box (the world at zoom 0 is one tile)
      view.map.setView(bounds.getCenter(), Math.min(d.maxzoom, view.map.getBoundsZoom(bounds) + 1));
    } else {
      view.layer.refreshPending();
    }
    view.root.querySelector(".caption").textContent = `zoom ${d.minzoom}–${d.maxzoom}; ${tilesNote(d.state)}`;
  }

  // an ended run promises no more tiles: the map shows those collated before it stopped
  function tilesNote(state) {
    if (state === "cancelled" || state === "failed") {
      return `the run ${state}: only the tiles collated before it ended are shown`;
    }
    return state === "done" ? "every tile rendered" : "tiles appear as their jobs are collated";
  }

  const clampLat = (lat) => Math.max(-85.0511, Math.min(85.0511, lat));

  // -- images: a filmstrip of the newest frames -----------------------------------------------------

  function images(view, d) {
    const signature = JSON.stringify([d.files, d.poster, d.note]);
    if (view.signature === signature) return;
    view.signature = signature;
    const strip = el("div", { class: "strip" });
    for (const name of d.files) {
      const img = el("img", { alt: name, class: "frame" });
      loadImage(img, filePath(view.id, name)).then((ok) => img.classList.toggle("farm-image-loaded", ok), showError);
      strip.append(el("figure", {}, img, el("figcaption", { text: name.split("/").pop() })));
    }
    const parts = [strip, el("p", { class: "caption", text: `${d.count ?? d.files.length} collated${d.note ? "; " + d.note : ""}` })];
    if (d.poster) {
      const poster = el("img", { class: "poster", alt: d.poster });
      loadImage(poster, filePath(view.id, d.poster)).catch(showError);
      parts.push(poster);
    }
    if (!d.files.length) parts.unshift(el("p", { class: "muted", text: "No images yet." }));
    view.root.replaceChildren(...parts);
  }

  // -- audio: the waveform of what has been joined -------------------------------------------------

  function waveform(view, d) {
    let canvas = view.root.querySelector("canvas");
    if (!canvas) {
      canvas = el("canvas", { class: "waveform", "aria-label": "waveform" });
      view.root.replaceChildren(canvas, el("p", { class: "caption" }));
    }
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    canvas.width = width;
    canvas.height = height;
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, width, height);
    g.fillStyle = "#e9ecef";
    g.fillRect(0, height / 2 - ratio / 2, width, ratio);
    g.fillStyle = "#1971c2";
    const n = d.peaks.length;
    let drawn = 0;
    d.peaks.forEach((peak, i) => {
      if (!peak) return;
      const x0 = Math.floor((i * width) / n);
      const x1 = Math.max(x0 + 1, Math.floor(((i + 1) * width) / n));
      const top = ((1 - peak[1]) / 2) * height;
      const bottom = ((1 - peak[0]) / 2) * height;
      g.fillRect(x0, top, x1 - x0, Math.max(1, bottom - top));
      drawn += 1;
    });
    canvas.dataset.drawn = drawn;
    view.root.querySelector(".caption").textContent =
      `${d.joined_s.toFixed(1)} s of ${d.seconds.toFixed(1)} s joined`;
  }

  function message(view, d) {
    view.root.replaceChildren(el("p", { class: "muted message", text: d.text }));
  }

  function none(view) {
    view.root.replaceChildren(el("p", { class: "muted", text: "This media type has no live preview." }));
  }

  const drawers = { tiles, images, waveform, message, none };

  async function refresh() {
    const view = current;
    if (!view) return;
    const d = await api("GET", `${base(view.id)}/preview`);
    if (d.kind === "tiles") d.state = (await api("GET", base(view.id))).state;  // the caption says an ended run
    if (view !== current) return;  // another project was chosen meanwhile
    if (view.kind !== d.kind) {  // first time, or the run's preview changed its kind
      if (view.map) { view.map.remove(); view.map = null; }
      view.kind = d.kind;
      view.signature = null;
      view.root.replaceChildren();
    }
    view.root.dataset.kind = d.kind;
    (drawers[d.kind] || none)(view, d);
  }

  function show(id, container) {
    if (current && current.map) current.map.remove();
    current = null;
    if (!id) return;
    container.replaceChildren();
    current = { id, root: container, kind: null, map: null };
    refresh().catch(showError);
  }

  farm.preview = { show, refresh };
})();
