"""The app's events as ``GET /config`` and ``GET /gradio_api/info`` describe them, for the load
benchmark (``scripts/load_test.py``): which event is which, and what a browser or the public API
sends as its inputs."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

API = "/gradio_api"


@dataclass
class InputSlot:
    """One input of an event: its component, the name the public API gives it (if any), its
    label, whether the API skips it (``gr.State``) and the value a fresh page holds."""

    component_id: int
    name: str | None
    label: str | None
    component_type: str
    skip_api: bool
    value: Any
    choices: list[Any] | None


@dataclass
class Endpoint:
    """One event (dependency) of the app, as ``/config`` describes it."""

    fn_index: int
    api_name: str | None
    trigger_id: int | None
    inputs: list[InputSlot]

    def slot(self, key: str) -> int:
        """The position of input ``key``: its API parameter name, else the one input whose label
        contains every word of ``key`` (``set_name`` -> ``set`` and ``name``); ValueError otherwise."""
        for index, slot in enumerate(self.inputs):
            if slot.name == key:
                return index
        words = [w for w in re.split(r"[_\W]+", key.lower()) if w]
        by_label = [i for i, slot in enumerate(self.inputs) if slot.label and all(w in slot.label.lower() for w in words)]
        if len(by_label) == 1:
            return by_label[0]
        known = [slot.name or slot.label for slot in self.inputs if not slot.skip_api]
        raise ValueError(f"event {self.api_name or self.fn_index} has no input {key!r}; its inputs are {known}")

    def browser_data(self, overrides: dict[str, Any] | None = None) -> list[Any]:
        """What a browser sends: every input's current value (None for ``gr.State``, which the
        server keeps), with ``overrides`` (by input name or label words) applied."""
        data = [None if slot.skip_api else slot.value for slot in self.inputs]
        for key, value in (overrides or {}).items():
            data[self.slot(key)] = value
        return data

    def api_data(self, overrides: dict[str, Any] | None = None) -> list[Any]:
        """What ``/call/<api_name>`` takes: :meth:`browser_data` without the ``gr.State`` inputs."""
        return [value for value, slot in zip(self.browser_data(overrides), self.inputs) if not slot.skip_api]


def _choice_values(props: dict) -> list[Any] | None:
    choices = props.get("choices")
    if choices is None:
        return None
    return [choice[1] if isinstance(choice, (list, tuple)) and len(choice) == 2 else choice for choice in choices]


class AppModel:
    """The app's events and components from ``GET /config`` and ``GET /gradio_api/info``."""

    def __init__(self, config: dict, api_info: dict) -> None:
        self.config = config
        self.components = {c["id"]: c for c in config["components"]}
        self.dependencies = config["dependencies"]
        names: dict[int, str] = {}
        for api_path, info in api_info.get("named_endpoints", {}).items():
            dependency = next((d for d in self.dependencies if d.get("api_name") == api_path.lstrip("/")), None)
            if dependency is None:
                continue
            api_inputs = [cid for cid in dependency["inputs"] if not self.components[cid].get("skip_api")]
            for cid, parameter in zip(api_inputs, info.get("parameters", [])):
                if parameter.get("parameter_name"):
                    names.setdefault(cid, parameter["parameter_name"])
        self.input_names = names

    @classmethod
    async def fetch(cls, http: httpx.AsyncClient, base: str) -> AppModel:
        config = await http.get(f"{base}/config")
        config.raise_for_status()
        info = await http.get(f"{base}{API}/info")
        return cls(config.json(), info.json() if info.status_code == 200 else {})

    def endpoint_at(self, index: int) -> Endpoint:
        dependency = self.dependencies[index]
        slots = []
        for cid in dependency["inputs"]:
            component = self.components[cid]
            props = component.get("props", {})
            slots.append(InputSlot(cid, self.input_names.get(cid), props.get("label"), component.get("type", ""), bool(component.get("skip_api")), props.get("value"), _choice_values(props)))
        targets = dependency.get("targets") or [[None, None]]
        return Endpoint(dependency.get("id", index), dependency.get("api_name"), targets[0][0], slots)

    def endpoint(self, api_name: str, fallback: Callable[[AppModel, dict], bool] | None = None) -> Endpoint:
        """The event named ``api_name``; else the first whose name is ``api_name_<n>`` (Gradio's
        name for a second event with the same function); else the first ``fallback`` accepts;
        ValueError listing the names otherwise."""
        for predicate in (lambda d: d.get("api_name") == api_name,
                          lambda d: re.fullmatch(rf"{re.escape(api_name)}_\d+", str(d.get("api_name"))) is not None,
                          lambda d: fallback is not None and fallback(self, d)):
            for index, dependency in enumerate(self.dependencies):
                if dependency.get("backend_fn", True) and predicate(dependency):
                    return self.endpoint_at(index)
        raise ValueError(f"the app has no event {api_name!r}; its events are {[d.get('api_name') for d in self.dependencies]}")

    def load_endpoints(self) -> list[Endpoint]:
        """The events a browser fires when it opens the page (``demo.load``)."""
        return [self.endpoint_at(i) for i, d in enumerate(self.dependencies) if d.get("backend_fn", True) and any(t[1] == "load" for t in d.get("targets", []))]


def pick_example(choices: list[str], set_name: str) -> str:
    """The first example key of ``set_name`` (keys look like ``camvid-0016E5_07959``), else the first key."""
    if not choices:
        raise ValueError("the app offers no examples")
    return next((c for c in choices if str(c).startswith(f"{set_name}-")), choices[0])


def preview_fallback(example_component: int):
    """The event a browser fires when the example dropdown changes (the image preview)."""
    return lambda app, dependency: [example_component, "change"] in [list(t) for t in dependency.get("targets", [])]


def loss_curve_fallback(app: AppModel, dependency: dict) -> bool:
    """The event whose only input is the focal-loss gamma slider."""
    inputs = dependency.get("inputs", [])
    return len(inputs) == 1 and "gamma" in str(app.components[inputs[0]].get("props", {}).get("label", "")).lower()
