"""The app under test as every scenario of ``scripts/load_test.py`` drives it: its address,
process and log, its Compare event with this run's settings (:class:`Target`, made by
:func:`prepare`), and uploads as a browser sends them (:func:`upload`) of CamVid frames that
are not among the app's examples (:func:`frames_to_upload`)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from loadapp import API, AppModel, Endpoint, pick_example
from loadlib import BrowserSession, EventResult, call_event, fetch_files, response_detail
from loadserver import ServerLog


@dataclass
class Target:
    """The app under test and how this run drives its Compare event."""

    base: str
    pid: int | None
    log: ServerLog
    http: Any
    app: AppModel
    compare: Endpoint
    overrides: dict[str, Any]
    examples: list[str]
    via: str
    fetch_files: bool

    async def run_compare(self, session: BrowserSession | None, timeout: float, example: str | None = None, image_file: dict | None = None) -> EventResult:
        """One Compare: through ``session`` (the browser protocol) or, with ``--via call``, the
        public API; on ``image_file`` (an :func:`upload`) when given, else on the example."""
        overrides = {**self.overrides, "example": example or self.overrides["example"], **({"image_file": image_file} if image_file else {})}
        if self.via == "call" or session is None:
            result = await call_event(self.http, self.base, self.compare.api_name, self.compare.api_data(overrides), timeout)
        else:
            result = await session.run(self.compare, overrides, timeout)
        if result.ok and self.fetch_files:
            errors = await fetch_files(self.http, self.base, result.output)
            if errors:
                result.ok, result.error = False, errors[0]
        result.output = None
        return result


def camvid_folder(args: argparse.Namespace, option: str) -> Path:
    """The CamVid folder whose frames ``option`` uploads (``--camvid`` else ``$SEGMODELS_CAMVID``);
    ValueError unless the run is on ``--set camvid`` and that folder has a ``val`` folder."""
    folder = args.camvid or (Path(os.environ["SEGMODELS_CAMVID"]) if os.environ.get("SEGMODELS_CAMVID") else None)
    if args.set != "camvid" or folder is None:
        raise ValueError(f"{option} needs --set camvid and a CamVid folder (--camvid DIR or $SEGMODELS_CAMVID)")
    if not (folder / "val").is_dir():
        raise ValueError(f"{option}: {folder} has no val folder (is it a CamVid folder?)")
    return folder


def frames_to_upload(folder: Path, examples: list[str]) -> list[Path]:
    """CamVid frames that are not among the app's examples (keys ``camvid-<stem>``): the val
    frames, then the train frames (never the test ones); ValueError when there are none."""
    frames = [path for split in ("val", "train") for path in sorted((folder / split).glob("*.png")) if f"camvid-{path.stem}" not in examples]
    if not frames:
        raise ValueError(f"{folder} holds no val or train frame that is not an example")
    return frames


async def upload(http: httpx.AsyncClient, base: str, path: Path) -> dict:
    """``path`` uploaded as a browser does; the file value an event then takes."""
    response = await http.post(f"{base}{API}/upload", files={"files": (path.name, path.read_bytes(), "image/png")})
    if response.status_code != 200:
        raise RuntimeError(f"upload of {path.name} refused: {response_detail(response)}")
    return {"path": response.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


async def prepare(args: argparse.Namespace, base: str, pid: int | None, log: ServerLog, http: Any) -> Target:
    app = await AppModel.fetch(http, base)
    compare = app.endpoint("compare")
    example_slot = compare.inputs[compare.slot("example")]
    examples = [c for c in (example_slot.choices or []) if str(c).startswith(f"{args.set}-")] or ([args.example] if args.example != "auto" else [])
    if not examples:
        raise ValueError(f"the app offers no {args.set!r} examples (it offers {example_slot.choices}); for CamVid start it with --camvid DIR, or choose --set shapes")
    models_slot = compare.inputs[compare.slot("models")]
    unknown = sorted(set(args.models) - set(models_slot.choices or args.models))
    if unknown:
        raise ValueError(f"unknown models {unknown}; the app offers {models_slot.choices}")
    example = pick_example(examples, args.set) if args.example == "auto" else args.example
    overrides = {"example": example, "set_name": args.set, "models": list(args.models), "depth": args.depth, "opacity": args.opacity}
    return Target(base, pid, log, http, app, compare, overrides, examples, args.via, args.fetch_files)
