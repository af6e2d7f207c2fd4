"""Start the semantic-segmentation dashboard (also the Hugging Face Spaces entry point).

    python app.py [--camvid DIR] [--weights DIR] [--port N] [--host H] [--device auto|cpu|cuda]

Environment: ``PORT`` / ``GRADIO_SERVER_PORT`` and ``GRADIO_SERVER_NAME`` (Spaces sets
them), ``SEGMODELS_CAMVID``, ``SEGMODELS_WEIGHTS``, ``SEGMODELS_DEVICE``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from demo import DemoConfig, build_demo, launch_kwargs

    overrides = {key: value for key, value in (("camvid_dir", args.camvid), ("weights_dir", args.weights), ("device", args.device)) if value is not None}
    config = DemoConfig(**overrides)
    port = args.port or int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    host = args.host or os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    demo = build_demo(config)
    demo.launch(server_name=host, server_port=port, **launch_kwargs(config))


if __name__ == "__main__":
    main()
