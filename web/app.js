// portraitseg web app: the bundled ONNX model in the browser (onnxruntime-web, WebGPU when an
// adapter exists, else WASM), background replacement on a canvas, EMA temporal smoothing.
// No framework: one module, state in `state` (also exposed as window.__ps for the browser test).
import * as ort from "./vendor/ort.min.mjs";

// Model input side (square, stretched: the same preprocessing as the Python runtime). Read from
// the served model (GET /healthz input_size) before the model loads; 224 only until then.
let SIZE = 224;
const MODEL_URL = "/model.onnx";
const HEALTH_URL = "/healthz";
// The first screen: this bundled sample photo, segmented, instead of an empty canvas.
const SAMPLE_URL = "sample.jpg";
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

const state = {
  ready: false, error: null, backend: "", live: false, frames: 0, fps: 0, inferences: 0, modelFps: 0,
  ms: { pre: 0, infer: 0, render: 0, total: 0 }, // last frame, per stage
  avgMs: { pre: 0, infer: 0, render: 0, total: 0 }, // exponential average for the readout
  mask: new Float32Array(SIZE * SIZE), prev: null, ema: 0.5,
  source: null, bgImage: null, photo: null,
  photoName: "", photos: 0, // the photo on screen ("sample.jpg" first) and how many were segmented
  snapshot, // test hook: aligned 224x224 mask + downscaled output pixels
};
window.__ps = state;

// Working canvases: model input, mask (alpha channel), person layer; sized by allocate().
let inputCanvas, inputCtx, maskCanvas, maskCtx, maskImage, inputTensorData;
allocate(SIZE);
const personCanvas = makeCanvas(1, 1);
const personCtx = personCanvas.getContext("2d");
const output = $("output");
const outCtx = output.getContext("2d", { willReadFrequently: true });
let session = null;
let modelLoaded;
const modelReady = new Promise((resolve) => { modelLoaded = resolve; });
let fpsWindow = [];
let modelWindow = [];

function allocate(size) {
  SIZE = size;
  state.mask = new Float32Array(size * size);
  state.prev = null;
  inputCanvas = makeCanvas(size, size);
  inputCtx = inputCanvas.getContext("2d", { willReadFrequently: true });
  maskCanvas = makeCanvas(size, size);
  maskCtx = maskCanvas.getContext("2d");
  maskImage = maskCtx.createImageData(size, size);
  inputTensorData = new Float32Array(3 * size * size);
}

async function servedInputSize() {
  try {
    const health = await (await fetch(HEALTH_URL)).json();
    const [h, w] = health.input_size || [];
    if (Number.isInteger(h) && h === w && h > 0) return h;
  } catch (_) { /* no server health endpoint (static hosting): keep the default */ }
  return SIZE;
}

function makeCanvas(w, h) {
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  return c;
}

function setStatus(text) {
  $("status").textContent = text;
}

async function pickProviders() {
  if (params.get("backend") === "wasm") return ["wasm"];
  // navigator.gpu can exist without a usable adapter (e.g. --disable-gpu): ask first.
  try {
    if (navigator.gpu && (await navigator.gpu.requestAdapter())) return ["webgpu", "wasm"];
  } catch (_) { /* no WebGPU */ }
  return ["wasm"];
}

async function loadModel() {
  ort.env.wasm.wasmPaths = new URL("vendor/", location.href).href;
  // Threads need SharedArrayBuffer, i.e. a cross-origin-isolated page (the server sends COOP/COEP).
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  // ORT can run WASM inference in a proxy worker (?proxy=1) so drawing never waits on it.
  ort.env.wasm.proxy = params.get("proxy") === "1"; // measured: proxy made inference ~10x slower here
  allocate(await servedInputSize());
  const providers = await pickProviders();
  session = await ort.InferenceSession.create(MODEL_URL, { executionProviders: providers, graphOptimizationLevel: "all" });
  state.backend = providers[0] + (providers[0] === "wasm" ? ` x${ort.env.wasm.numThreads}` : "");
  state.ready = true;
  setStatus(`model ready (${state.backend})`);
  $("camera").disabled = false;
  modelLoaded();
}

// ---------------------------------------------------------------- pipeline stages

function preprocess(source) {
  inputCtx.drawImage(source, 0, 0, SIZE, SIZE);
  const px = inputCtx.getImageData(0, 0, SIZE, SIZE).data;
  const plane = SIZE * SIZE;
  for (let i = 0, j = 0; i < plane; i++, j += 4) {
    inputTensorData[i] = px[j] / 255;
    inputTensorData[i + plane] = px[j + 1] / 255;
    inputTensorData[i + 2 * plane] = px[j + 2] / 255;
  }
  return new ort.Tensor("float32", inputTensorData, [1, 3, SIZE, SIZE]);
}

async function infer(tensor, smooth) {
  const out = await session.run({ [session.inputNames[0]]: tensor });
  const logits = out[session.outputNames[0]].data;
  // EMA over frames hides single-frame flicker at the cost of a little lag on fast motion.
  const keep = smooth && state.prev ? state.ema : 0;
  const mask = state.mask;
  for (let i = 0; i < mask.length; i++) {
    const p = 1 / (1 + Math.exp(-logits[i]));
    mask[i] = keep ? keep * state.prev[i] + (1 - keep) * p : p;
  }
  state.prev = smooth ? (state.prev || new Float32Array(mask.length)) : null;
  if (state.prev) state.prev.set(mask);
}

function updateMaskCanvas() {
  const d = maskImage.data;
  const mask = state.mask;
  for (let i = 0, j = 3; i < mask.length; i++, j += 4) d[j] = mask[i] * 255;
  maskCtx.putImageData(maskImage, 0, 0);
}

function drawCover(ctx, img, w, h) {
  const s = Math.max(w / img.width, h / img.height);
  const dw = img.width * s, dh = img.height * s;
  ctx.drawImage(img, (w - dw) / 2, (h - dh) / 2, dw, dh);
}

function drawBlur(ctx, source, w, h) {
  // A blurred draw fades to transparent over ~2 radii at its edges, and whatever the canvas held
  // before showed through there (the "green glow" after the colour background). So: the sharp
  // frame underneath, and the blurred one drawn 2 radii larger on every side.
  const r = Math.max(4, Math.round(w / 40));
  ctx.drawImage(source, 0, 0, w, h);
  ctx.filter = `blur(${r}px)`;
  ctx.drawImage(source, -2 * r, -2 * r, w + 4 * r, h + 4 * r);
  ctx.filter = "none";
}

function drawBackground(ctx, source, w, h) {
  const mode = $("bg").value;
  if (mode === "color") {
    ctx.fillStyle = $("color").value;
    ctx.fillRect(0, 0, w, h);
  } else if (mode === "image" && state.bgImage) {
    drawCover(ctx, state.bgImage, w, h);
  } else {
    drawBlur(ctx, source, w, h); // "image" before one is chosen, too (the page says so)
  }
}

// Display size: the whole picture inside the window (a 384x512 portrait must not be scaled
// past a 900-px-high window), aspect kept; small pictures are scaled up to the space there is.
function fitCanvas() {
  const stage = $("stage");
  const top = output.getBoundingClientRect().top + window.scrollY;
  const oneColumn = window.matchMedia("(max-width: 760px)").matches;
  // One column (phones): leave the first buttons on screen under the picture.
  let room = window.innerHeight - top - 16;
  if (oneColumn) room = Math.min(room, window.innerHeight * 0.62);
  const scale = Math.min(stage.clientWidth / output.width, Math.max(120, room) / output.height);
  output.style.width = `${Math.floor(output.width * scale)}px`;
  output.style.height = `${Math.floor(output.height * scale)}px`;
}

function setCanvasSize(w, h) {
  if (output.width !== w || output.height !== h) {
    output.width = w;
    output.height = h;
    fitCanvas();
  }
}

function render(source, w, h) {
  setCanvasSize(w, h);
  if (personCanvas.width !== w || personCanvas.height !== h) {
    personCanvas.width = w;
    personCanvas.height = h;
  }
  updateMaskCanvas();
  drawBackground(outCtx, source, w, h);
  // Person layer: the frame, keeping only where the (bilinearly upscaled) mask is opaque.
  personCtx.globalCompositeOperation = "copy";
  personCtx.drawImage(source, 0, 0, w, h);
  personCtx.globalCompositeOperation = "destination-in";
  personCtx.imageSmoothingEnabled = true;
  personCtx.drawImage(maskCanvas, 0, 0, w, h);
  personCtx.globalCompositeOperation = "source-over";
  outCtx.drawImage(personCanvas, 0, 0);
}

function sourceSize(source) {
  return source instanceof HTMLVideoElement
    ? [source.videoWidth, source.videoHeight]
    : [source.naturalWidth, source.naturalHeight];
}

function stamp(win, t) {
  win.push(t);
  while (win.length && t - win[0] > 1000) win.shift();
  return win.length > 1 ? (1000 * (win.length - 1)) / (t - win[0]) : 0;
}

function average(k, v, first) {
  state.avgMs[k] = first ? v : 0.9 * state.avgMs[k] + 0.1 * v;
}

// Model stage: frame -> mask. In live mode it runs in its own loop, decoupled from drawing.
async function inferFrame(source, smooth) {
  const [w, h] = sourceSize(source);
  if (!w || !h) return false;
  const t0 = performance.now();
  const tensor = preprocess(source);
  const t1 = performance.now();
  await infer(tensor, smooth);
  updateMaskCanvas();
  const t2 = performance.now();
  state.ms.pre = t1 - t0;
  state.ms.infer = t2 - t1;
  average("pre", state.ms.pre, !state.inferences);
  average("infer", state.ms.infer, !state.inferences);
  state.inferences++;
  state.modelFps = stamp(modelWindow, t2);
  return true;
}

// Draw stage: the current frame over the background with the latest mask.
function renderFrame(source) {
  const [w, h] = sourceSize(source);
  if (!w || !h || !state.inferences) return false;
  const t0 = performance.now();
  render(source, w, h);
  const t1 = performance.now();
  state.ms.render = t1 - t0;
  state.ms.total = state.ms.pre + state.ms.infer + state.ms.render;
  average("render", state.ms.render, !state.frames);
  average("total", state.ms.total, !state.frames);
  state.frames++;
  state.fps = stamp(fpsWindow, t1);
  showStats();
  return true;
}

function showStats() {
  const a = state.avgMs;
  $("stats").textContent =
    `${state.backend}  ${state.live ? `${state.fps.toFixed(1)} fps (model ${state.modelFps.toFixed(1)}/s)` : "photo"}\n` +
    `pre ${a.pre.toFixed(1)} ms  infer ${a.infer.toFixed(1)} ms  render ${a.render.toFixed(1)} ms\n` +
    `total ${a.total.toFixed(1)} ms/frame`;
}

// ---------------------------------------------------------------- camera / photo

async function startCamera() {
  const video = $("video");
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" }, audio: false,
  });
  video.srcObject = stream;
  await video.play();
  state.source = video;
  state.photo = null;
  state.prev = null;
  state.live = true;
  fpsWindow = [];
  modelWindow = [];
  $("camera").textContent = "Stop camera";
  $("download").disabled = true;
  $("hint").hidden = true;
  setStatus(`camera ${video.videoWidth}x${video.videoHeight} (${state.backend})`);
  loop();
}

function stopCamera() {
  state.live = false;
  const video = $("video");
  for (const t of video.srcObject?.getTracks() || []) t.stop();
  video.srcObject = null;
  $("camera").textContent = "Start camera";
}

function loop() {
  // Two loops: the model updates the mask as fast as it can (one inference in flight, so a
  // slow device drops frames rather than queueing them), while every animation frame draws the
  // newest camera frame with the latest mask. With the WASM proxy worker, inference does not
  // block drawing; the mask then lags the frame by at most one inference.
  const inferLoop = async () => {
    while (state.live) {
      try {
        await inferFrame(state.source, true);
      } catch (err) {
        fail(err);
        return;
      }
      await new Promise((r) => setTimeout(r, 0));
    }
  };
  const drawLoop = () => {
    if (!state.live) return;
    renderFrame(state.source);
    requestAnimationFrame(drawLoop);
  };
  inferLoop();
  requestAnimationFrame(drawLoop);
}

async function loadImageFile(file) {
  const img = new Image();
  img.src = URL.createObjectURL(file);
  await img.decode();
  return img;
}

async function usePhoto(file) {
  if (state.live) stopCamera();
  $("hint").hidden = true;
  await showPhoto(await loadImageFile(file), file.name);
}

async function showPhoto(img, name) {
  await modelReady; // a photo chosen while the model loads is segmented once it is there
  state.source = img;
  state.photo = img;
  state.prev = null; // a still photo: no temporal smoothing
  await inferFrame(img, false);
  renderFrame(img);
  state.photoName = name;
  state.photos++;
  $("download").disabled = false;
  const what = name === SAMPLE_URL ? "sample photo" : "photo";
  setStatus(`${what} ${img.naturalWidth}x${img.naturalHeight} (${state.backend})`);
}

async function showSample() {
  const img = new Image();
  img.src = SAMPLE_URL;
  await img.decode();
  if (state.photo || state.live) return; // the user was quicker
  // The photo itself while the model loads, then the same photo segmented.
  setCanvasSize(img.naturalWidth, img.naturalHeight);
  outCtx.drawImage(img, 0, 0);
  await modelReady;
  if (!state.photo && !state.live) await showPhoto(img, SAMPLE_URL);
}

async function redrawPhoto() {
  if (!state.live && state.photo) renderFrame(state.photo);
}

function downloadCutout() {
  const img = state.photo;
  if (!img) return;
  const c = makeCanvas(img.naturalWidth, img.naturalHeight);
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  ctx.globalCompositeOperation = "destination-in";
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(maskCanvas, 0, 0, c.width, c.height);
  c.toBlob((blob) => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "cutout.png";
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }, "image/png");
}

function snapshot() {
  const c = makeCanvas(SIZE, SIZE);
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(output, 0, 0, SIZE, SIZE);
  return { mask: Array.from(state.mask), pixels: Array.from(ctx.getImageData(0, 0, SIZE, SIZE).data) };
}

function fail(err) {
  state.error = String(err && err.message ? err.message : err);
  setStatus(`error: ${state.error}`);
  console.error(err);
}

// ---------------------------------------------------------------- wiring

function showBackgroundControls() {
  const mode = $("bg").value;
  $("color").hidden = mode !== "color";
  $("bgimage-label").hidden = mode !== "image";
  $("bg-hint").hidden = !(mode === "image" && !state.bgImage);
}

function wire() {
  $("camera").addEventListener("click", () => (state.live ? stopCamera() : startCamera().catch(fail)));
  $("photo").addEventListener("change", (e) => e.target.files[0] && usePhoto(e.target.files[0]).catch(fail));
  $("download").addEventListener("click", downloadCutout);
  $("bgimage").addEventListener("change", async (e) => {
    if (!e.target.files[0]) return;
    state.bgImage = await loadImageFile(e.target.files[0]);
    $("bg").value = "image";
    showBackgroundControls();
    redrawPhoto().catch(fail);
  });
  $("bg").addEventListener("input", () => {
    showBackgroundControls();
    // "image" with none chosen yet: ask for one now (blur, and a note, until then).
    if ($("bg").value === "image" && !state.bgImage) $("bgimage").click();
    redrawPhoto().catch(fail);
  });
  $("color").addEventListener("input", () => redrawPhoto().catch(fail));
  window.addEventListener("resize", fitCanvas);
  $("ema").addEventListener("input", (e) => {
    state.ema = Number(e.target.value);
    $("emaValue").textContent = e.target.value;
  });
  // URL parameters (used by the browser test, handy for demos):
  // ?bg=color&color=00ff00&ema=0.5&autostart=1 (camera at once) &sample=0 (no sample photo)
  if (params.get("bg")) $("bg").value = params.get("bg");
  if (params.get("color")) $("color").value = "#" + params.get("color").replace(/^#/, "");
  if (params.get("ema")) {
    state.ema = Number(params.get("ema"));
    $("ema").value = params.get("ema");
    $("emaValue").textContent = params.get("ema");
  }
  showBackgroundControls();
  fitCanvas();
}

wire();
const autostart = params.get("autostart") === "1";
if (autostart || params.get("sample") === "0") $("hint").hidden = true;
else showSample().catch(fail);
loadModel()
  .then(() => (autostart ? startCamera() : null))
  .catch(fail);
