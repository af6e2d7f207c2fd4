"""Start the semantic-segmentation dashboard (also the Hugging Face Spaces entry point).

    python app.py [--camvid DIR] [--weights DIR] [--port N] [--host H] [--device auto|cpu|cuda]

Environment: ``PORT`` / ``GRADIO_SERVER_PORT`` and ``GRADIO_SERVER_NAME`` (Spaces sets
them), ``SEGMODELS_CAMVID``, ``SEGMODELS_WEIGHTS``, ``SEGMODELS_DEVICE``, ``SEGMODELS_BACKEND`` (auto, torch or onnxruntime), ``SEGMODELS_UPLOAD_DIR`` (default: a
folder per port in the system's temporary folder, emptied at every start)."""

from __future__ import annotations

import argparse
import atexit
import ctypes
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Semantic segmentation dashboard (Gradio)")
    parser.add_argument("--camvid", type=Path, default=None, help="CamVid folder (SegNet layout) whose val split provides examples; env SEGMODELS_CAMVID")
    parser.add_argument("--weights", type=Path, default=None, help="model zoo folder (default assets/weights); env SEGMODELS_WEIGHTS")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda; env SEGMODELS_DEVICE")
    parser.add_argument("--port", type=int, default=None, help="port (default $PORT, $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--host", default=None, help="interface to listen on (default $GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0 for a classroom network)")
    return parser.parse_args(argv)


def tune_malloc(arenas: int = 2, mmap_threshold: int = 32 * 2**20) -> None:
    """glibc settings for a long-running server that runs models for a class:

    * ``M_ARENA_MAX`` = 2: threads that allocate at the same time otherwise get arenas of
      their own, and dozens of Gradio worker threads fragment them (``scripts/load_test.py
      soak`` shows the growth without it).
    * ``M_MMAP_THRESHOLD`` = 32 MiB, fixed: activation buffers come from the heap and are
      reused by the next pass. With a threshold below them every buffer is a fresh ``mmap``
      whose pages the kernel zeroes again on every pass (``python scripts/lanes_throughput.py
      --malloc`` times the passes both ways). The freed heap memory is handed back to the
      system whenever the server falls quiet (:func:`demo.memory.release_free_memory`, called
      by the idle benchmarker), so memory stays flat over ``scripts/load_test.py soak``.

    ``mallopt``, as the ``MALLOC_ARENA_MAX`` and ``MALLOC_MMAP_THRESHOLD_`` variables would; on
    glibc only."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
        libc.mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def fresh_upload_dir(port: int) -> Path:
    """This server's own folder for uploads and served files (``GRADIO_TEMP_DIR``), emptied
    at start-up and removed at exit, so files left by a killed server never survive a restart
    and no other app's files are touched. Set before Gradio is imported (it reads the variable
    then)."""
    root = Path(os.environ.get("SEGMODELS_UPLOAD_DIR") or Path(tempfile.gettempdir()) / f"segmodels-uploads-{port}")
    shutil.rmtree(root, ignore_errors=True)
    try:
        root.mkdir(parents=True)
    except OSError as error:
        raise SystemExit(f"app.py: cannot create the upload folder {root} ({error.strerror or error}); set SEGMODELS_UPLOAD_DIR to a writable folder") from None
    os.environ["GRADIO_TEMP_DIR"] = os.environ["SEGMODELS_OWN_UPLOAD_DIR"] = str(root)
    atexit.register(shutil.rmtree, root, True)
    return root


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM (``kill``, a container stopping) ends the server as Ctrl-C does, so the exit
    handlers run and remove its folders (by default SIGTERM ends Python without them)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    port = args.port or int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    tune_malloc()
    stop_cleanly_on_sigterm()
    fresh_upload_dir(port)
    from demo import DemoConfig, build_demo, serve

    overrides = {key: value for key, value in (("camvid_dir", args.camvid), ("weights_dir", args.weights), ("device", args.device)) if value is not None}
    try:
        config = DemoConfig(**overrides)
        demo = build_demo(config)
    except ValueError as error:  # a setting out of range: say which, without a traceback
        raise SystemExit(f"app.py: {error}") from None
    host = args.host or os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    serve(demo, config, host, port)


if __name__ == "__main__":
    main()
