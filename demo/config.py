"""Settings of the dashboard: where the weights and the CamVid examples are, which device
to use, how latency is timed, and the limits a public demo needs.

Every field can be given to :class:`DemoConfig` directly (tests do) or through an
environment variable (Hugging Face Spaces and ``python app.py`` do)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from segmodels import zoo
from segmodels.runtime import BACKENDS

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = REPO_ROOT / "assets"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        return default


@dataclass
class DemoConfig:
    """Everything ``build_demo`` needs to know.

    Attributes:
        weights_dir: the model zoo (``<set>/<arch>.pt`` + ``.json``); default
            :func:`segmodels.zoo.default_weights_dir` (env ``SEGMODELS_WEIGHTS``, else ``assets/weights``).
        camvid_dir: a CamVid folder (SegNet layout) whose ``val`` split provides examples;
            env ``SEGMODELS_CAMVID`` or ``python app.py --camvid DIR``.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``; env ``SEGMODELS_DEVICE``.
        torch_threads: CPU threads for the models' passes, all lanes together (None: PyTorch's
            default); env ``SEGMODELS_THREADS``. Use 1 on a machine whose cores are busy with
            other work.
        lanes: forward passes at once on a CPU, each on ``torch_threads // lanes`` threads
            (:class:`segmodels.runtime.PassLanes`); 0: :func:`segmodels.runtime.default_lanes`;
            env ``SEGMODELS_LANES``. Model jobs run in as many turns at once
            (:class:`demo.scheduler.FairScheduler`).
        backend: what runs the models: ``auto`` (once a model's latency was benchmarked at an
            image size, the fastest of PyTorch, PyTorch in bfloat16 and ONNX Runtime measured
            on this machine; PyTorch before), or ``torch``, ``torch-bf16`` or ``onnxruntime``
            for every model (:mod:`segmodels.runtime`); env ``SEGMODELS_BACKEND``.
        max_side: uploads are downscaled so their longest side is at most this.
        warmup, repeats: untimed and timed forward passes behind each latency benchmark
            (measured once per model, depth, input size, device and threads, while idle).
        warm_up: load every model and benchmark it at its set's usual image size in the
            background as soon as the app is built.
        idle_seconds: quiet time after the last request before a benchmark runs.
        latency_max_age_s: a benchmark older than this is measured again when idle.
        shapes_seed, num_shapes_examples, shapes_size: held-out Shapes examples (seeds
            ``shapes_seed``, ``shapes_seed + 1``, ...; training used seeds 0 and 1).
        num_camvid_examples: CamVid validation images offered as examples.
        rf_input_size: input size used for the theoretical receptive-field traces.
        queue_max_size, light_concurrency: Gradio's queue (only light events wait in it).
        jobs_per_address, jobs_total, max_wait_s: model jobs wait in :class:`demo.scheduler.FairScheduler`:
            at most this many per client address (a class behind one NAT address shares it;
            env ``SEGMODELS_JOBS_PER_ADDRESS``) and in all, each at most this long.
        per_client_jobs, address_model_jobs, address_light_jobs, waiting_per_address: one
            admission policy for the browser protocol and the HTTP API (:mod:`demo.admission`):
            jobs waiting or running per browser tab (an API client's address: ``api_burst``), model
            jobs and light events of one address in Gradio's hands at once, and jobs of one
            address waiting for that (a class behind one NAT: each tab is its own client);
            env ``SEGMODELS_WAITING_PER_ADDRESS`` for the last.
        max_string: the longest text accepted in a job's inputs (longer: 413, never echoed).
        listen_grace_s: a browser tab whose result stream has been closed this long is no
            longer listening; its waiting model jobs are dropped.
        trust_forwarded: take the client address from ``X-Forwarded-For`` (only behind a proxy
            that sets it, as Hugging Face Spaces does; default: on Spaces).
        stream_handoff_s: a streaming model job whose consumer (Gradio) has not asked for its next
            result this many seconds after the last one (it failed handling it and dropped the
            stream) is closed, and its device turn given back.
        result_grace_s: an API (``/call``) job whose result nobody started reading this many
            seconds after it was submitted is dropped when its turn comes.
        api_burst, api_per_second: ``/call`` API jobs per client address: at most ``api_burst`` at
            once, then ``api_per_second`` (browsers are not limited by this).
        max_body: largest request body other than an upload (bytes).
        max_uploads: files per upload request (more are refused with 413).
        max_file_size: largest accepted upload file (bytes).
        upload_cap_mb: what Gradio's upload folder may keep (uploads and the cached copies of
            shown images), least recently used deleted first; env ``SEGMODELS_UPLOAD_CAP_MB``.
        disk_reserve_mb: uploads are refused (507, with a message) when the disk has less than
            this free beyond one upload, so examples can still write the images they show.
        upload_idle_s, upload_timeout_s: an upload is refused (408) after this long without
            data, or this long in all.
        max_body_idle_s: a request body that stops arriving for this long is answered 408.
        header_timeout_s: a connection whose request head is not complete this long is closed.
        max_connections: connections served at once (uvicorn's ``limit_concurrency``: beyond it
            503), lowered to leave file descriptors for the rest; env ``SEGMODELS_MAX_CONNECTIONS``.
        connections_per_address: open connections one client address may hold (more are closed
            as soon as they are accepted; not applied behind a trusted proxy, where every
            connection comes from the proxy): a browser opens up to six, so forty behind
            one NAT fit.
        frame_ancestors: the pages allowed to show the app in a frame (a CSP ``frame-ancestors``
            source list, e.g. ``'self' https://huggingface.co``); unset: any page may (Hugging
            Face Spaces does); env ``SEGMODELS_FRAME_ANCESTORS``.
        model_retry_s: a model that failed to load is tried again this long after.
        state_ttl_s: seconds a browser session's results are kept.
        shared_predictions_mb: memory for masks already computed on an image, shared by every
            session, so a class running the teacher's example runs each model on it once
            (least recently used dropped first; 0 turns it off); env ``SEGMODELS_SHARED_PREDICTIONS_MB``.
        max_sessions: browser sessions whose state the server keeps (Gradio's
            ``state_session_capacity``; the least recently used beyond it are forgotten: a
            class of forty with reloads fits). Gradio keeps a closed tab's session, 1.5-2 MiB
            here, until it is evicted, so this bounds the memory page loads add: a soak with
            20 was flat after 20 page loads (``scripts/load_test.py soak --env
            SEGMODELS_MAX_SESSIONS=20``); env ``SEGMODELS_MAX_SESSIONS``.
    """

    weights_dir: Path = field(default_factory=zoo.default_weights_dir)
    camvid_dir: Path | None = field(default_factory=lambda: _env_path("SEGMODELS_CAMVID"))
    device: str = field(default_factory=lambda: os.environ.get("SEGMODELS_DEVICE", "auto"))
    torch_threads: int | None = field(default_factory=lambda: _env_int("SEGMODELS_THREADS", 0) or None)
    lanes: int = field(default_factory=lambda: _env_int("SEGMODELS_LANES", 0))
    backend: str = field(default_factory=lambda: os.environ.get("SEGMODELS_BACKEND", "auto"))
    max_side: int = 512
    warmup: int = field(default_factory=lambda: _env_int("SEGMODELS_WARMUP", 1))
    repeats: int = field(default_factory=lambda: _env_int("SEGMODELS_REPEATS", 5))
    warm_up: bool = True
    idle_seconds: float = 2.0
    latency_max_age_s: float = 1800.0
    shapes_seed: int = 1000
    num_shapes_examples: int = 8
    shapes_size: int = 128
    num_camvid_examples: int = 8
    rf_input_size: tuple[int, int] = (256, 256)
    queue_max_size: int = field(default_factory=lambda: _env_int("SEGMODELS_QUEUE_SIZE", 256))
    light_concurrency: int = 4
    jobs_per_address: int = field(default_factory=lambda: _env_int("SEGMODELS_JOBS_PER_ADDRESS", 100))
    jobs_total: int = 250
    max_wait_s: float = 600.0
    per_client_jobs: int = 16
    address_model_jobs: int = 10
    address_light_jobs: int = 8
    waiting_per_address: int = field(default_factory=lambda: _env_int("SEGMODELS_WAITING_PER_ADDRESS", 200))
    max_string: int = 2000
    listen_grace_s: float = 10.0
    trust_forwarded: bool = field(default_factory=lambda: bool(os.environ.get("SPACE_ID")))
    result_grace_s: float = 10.0
    stream_handoff_s: float = 30.0
    api_burst: int = 10
    api_per_second: float = 1.0
    max_body: int = 64 * 1024
    max_uploads: int = 2
    max_file_size: int = 10 * 2**20
    upload_cap_mb: int = field(default_factory=lambda: _env_int("SEGMODELS_UPLOAD_CAP_MB", 512))
    disk_reserve_mb: int = 256
    upload_idle_s: float = 30.0
    upload_timeout_s: float = 120.0
    max_body_idle_s: float = 30.0
    header_timeout_s: float = 10.0
    max_connections: int = field(default_factory=lambda: _env_int("SEGMODELS_MAX_CONNECTIONS", 1000))
    connections_per_address: int = 400
    frame_ancestors: str | None = field(default_factory=lambda: os.environ.get("SEGMODELS_FRAME_ANCESTORS") or None)
    model_retry_s: float = 60.0
    state_ttl_s: int = 3600
    max_sessions: int = field(default_factory=lambda: _env_int("SEGMODELS_MAX_SESSIONS", 100))
    shared_predictions_mb: int = field(default_factory=lambda: _env_int("SEGMODELS_SHARED_PREDICTIONS_MB", 64))
    title: str = "Semantic segmentation: U-Net, U-Net++, U-Net 3+ and DeepLabV3+"

    def __post_init__(self) -> None:
        self.weights_dir = Path(self.weights_dir).expanduser().resolve()
        if self.camvid_dir is not None:
            self.camvid_dir = Path(self.camvid_dir).expanduser().resolve()
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend (SEGMODELS_BACKEND) must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.lanes < 0:
            raise ValueError(f"lanes (SEGMODELS_LANES) must be at least 0 (0: chosen for the machine), got {self.lanes}")
        if self.shared_predictions_mb < 0:
            raise ValueError(f"shared_predictions_mb must be at least 0, got {self.shared_predictions_mb}")
        if self.upload_cap_mb < 1:
            raise ValueError(f"upload_cap_mb (SEGMODELS_UPLOAD_CAP_MB) must be at least 1, got {self.upload_cap_mb}")
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {self.max_sessions}")
        if self.api_burst < 1 or not self.api_per_second > 0:
            raise ValueError(f"need api_burst >= 1 and api_per_second > 0, got {self.api_burst}, {self.api_per_second}")
        if self.warmup < 0 or self.repeats < 1:
            raise ValueError(f"need warmup >= 0 and repeats >= 1, got {self.warmup}, {self.repeats}")
