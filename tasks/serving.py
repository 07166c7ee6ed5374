"""The REST service: a registered model behind HTTP (FastAPI + uvicorn); usage in docs/serving.md.

Rows go through the batch flow's `score_frame`, so they get the prediction the evaluation gave them.
When the followed alias moves, the new version is swapped in; requests in flight finish on theirs,
and a version that fails to load is not served (the old one stays, /health says why).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from fastapi import Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from config.errors import GauntletError, RegistryError
from tasks import registry
from tasks.ml.scoring import InputSchema, SchemaError, score_frame

log = logging.getLogger("gauntlet.serving")

DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 4 * 2**20  # 4 MiB: about 10,000 rows of 30 numbers
DEFAULT_MAX_ROWS = 10_000


# --- what the service answers ------------------------------------------------------------------

Label = str | int | float | bool


class RowPrediction(BaseModel):
    prediction: Label = Field(description="the predicted class, as labelled in the training data (regression: "
                                          "the predicted number)")
    probabilities: dict[str, float] | None = Field(
        None, description="classification: probability of each class (keys: class labels as text)")
    interval: tuple[float, float] | None = Field(
        None, description="regression: [lower, upper], the split-conformal prediction interval at the model's "
                          "coverage (GET /model: prediction_interval)")


class PredictResponse(BaseModel):
    model_name: str
    model_version: int
    predictions: list[RowPrediction]


class Health(BaseModel):
    status: str = Field(description="ok, or degraded when the alias moved to a version that failed to load")
    model_name: str
    model_version: int
    alias: str | None
    reload_error: str | None = None


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: int
    family: str | None
    task: str | None
    target: str | None
    classes: list[Label]
    metric: str | None
    test_metrics: dict[str, float | None]
    valid_metrics: dict[str, float | None]
    decision_threshold: float | None
    prediction_interval: dict[str, float | str | int | None] | None = None  # regression: coverage, half_width...
    data_sha256: str | None
    config_hash: str | None
    registered_at: str | None
    run_id: str | None
    input_schema: list[dict[str, str]]


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    detail: list[ErrorDetail] | str


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and math.isfinite(value) else None


# --- the model being served ----------------------------------------------------------------------

# No real training data holds larger numbers, and they overflow when scaled: refuse them in validation.
MAX_ABS_NUMBER = 1e30
Number = Annotated[float, Field(ge=-MAX_ABS_NUMBER, le=MAX_ABS_NUMBER, allow_inf_nan=False)]

# Values are checked for their JSON type here and read by InputSchema.prepare, as batch reads a file's
# cells: a number sent as text, a missing-value token (the model's data.na_values) and a date with an
# offset included. Text is stripped first, as cells are.
IsoDateTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


def _kind_type(kind: str, tokens: list[str]) -> tuple[Any, str]:
    if kind == "numeric":
        words = frozenset(tokens)

        def read(value: Any) -> Any:  # a missing-value token is null; other text is parsed as a number
            if isinstance(value, str):
                value = value.strip()
                return None if value in words else value
            return value

        return (Annotated[Number | None, BeforeValidator(read)],
                f"a number within +-{MAX_ABS_NUMBER:g} (text such as \"3.5\" too), or null or a missing-value "
                "token (the model's data.na_values, e.g. \"NA\") when missing")
    if kind == "categorical":
        return str | int | Number | bool | None, "a category (text or a code), or null when missing"
    if kind == "datetime":
        return (IsoDateTime | None, "a date or date-time in ISO 8601, e.g. 2024-05-31 or 2024-10-27T02:30:00+01:00 "
                                    "(an offset is converted to UTC), or null when missing")
    return str | int | float | bool | None, "a value as in the training data, or null"


@dataclass(frozen=True)
class Served:
    """One loaded version and everything derived from it (swapped whole on reload)."""

    model: registry.RegisteredModel
    schema: InputSchema
    rows: TypeAdapter  # list[Row]: the request body's validator
    row_schema: dict[str, Any]  # the JSON schema of one row, for the OpenAPI spec

    @classmethod
    def load(cls, root: str | Path, name: str, version: int) -> Served:
        model = registry.load_model(root, name, version=version)  # sha256 checked before unpickling
        schema = InputSchema.from_metadata(model.metadata)
        fields = {}
        for i, column in enumerate(schema.columns):
            kind_type, description = _kind_type(column.kind, schema.na_values)
            fields[f"f{i}"] = (kind_type, Field(..., alias=column.name, description=description))
        row = create_model("Row", __config__=ConfigDict(extra="ignore", populate_by_name=False), **fields)
        rows = TypeAdapter(list[row])
        return cls(model, schema, rows, row.model_json_schema(by_alias=True))


class ModelHolder:
    """The version being served; follows `alias` in the registry when `reload_every_s` is set.
    `wait`: an empty registry (before the first training) is not an error: `current` stays None and
    the reload thread loads the first champion as soon as there is one."""

    def __init__(self, root: str | Path, model_name: str | None = None, alias: str | None = "champion",
                 version: int | None = None, reload_every_s: float | None = 2.0, wait: bool = False) -> None:
        self.root = Path(root)
        self.wanted = model_name
        self.alias = None if version is not None else (alias or "champion")
        self.name: str | None = None
        self.current: Served | None = None
        self.reload_error: str | None = None
        try:
            self.name = registry.resolve_model_name(self.root, model_name, latest=True)
            found = registry.resolve_version(self.root, self.name, self.alias, version)
            self.current = Served.load(self.root, self.name, found)
        except RegistryError:
            if not (wait and self.alias and reload_every_s):
                raise
            self.name = None
            log.info("no model in %s yet: waiting for a champion (/health answers 503 until then)", self.root)
        self._stop = threading.Event()
        self._thread = None
        if self.alias and reload_every_s:
            self._thread = threading.Thread(target=self._follow, args=(reload_every_s,), daemon=True,
                                            name="gauntlet-model-reload")
            self._thread.start()

    @property
    def version(self) -> int | None:
        return self.current.model.version if self.current is not None else None

    def check(self) -> bool:
        """Load the version the alias points to now, if it moved (or the first one, while waiting).
        True when a new version is served."""
        if self.name is None:
            try:
                self.name = registry.resolve_model_name(self.root, self.wanted, latest=True)
            except RegistryError:
                return False
        target = registry.get_alias(self.root, self.name, self.alias)
        if target is not None and target == self.version and self.reload_error:
            log.info("alias %r points at the served version %d again", self.alias, target)
            self.reload_error = None  # /health is ok again: the version that failed is no longer wanted
        if target is None or target == self.version:
            return False
        try:
            served = Served.load(self.root, self.name, target)
        except (GauntletError, OSError, ValueError) as exc:
            message = f"alias {self.alias!r} moved to version {target}, which failed to load: {exc}"
            if message != self.reload_error:
                log.error("%s; still serving version %s", message, self.version)
            self.reload_error = message
            return False
        previous, self.current, self.reload_error = self.version, served, None  # one reference swap
        log.info("alias %r moved: now serving %s version %d (was %s)", self.alias, self.name, target,
                 previous if previous is not None else "no model")
        return True

    def _follow(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - a registry hiccup must not end the reload thread
                log.warning("reload check failed: %s", exc)

    def close(self) -> None:
        self._stop.set()


# --- the application -------------------------------------------------------------------------------


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors with field aliases (column names) and the body prefix FastAPI uses."""
    out = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = ["body", *error["loc"]]
        out.append({"loc": loc, "msg": error["msg"], "type": error["type"]})
    return out


def create_app(holder: ModelHolder, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_rows: int = DEFAULT_MAX_ROWS):
    """The FastAPI application serving `holder`'s model."""
    from fastapi import FastAPI
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import JSONResponse

    shown = holder.name or holder.wanted or "(the first champion)"
    app = FastAPI(title="gauntlet model service", version="1",
                  description=f"Predictions of the registered model {shown!r}"
                              f"{f' (alias {holder.alias!r})' if holder.alias else ''}.")
    app.state.holder = holder

    def error(status: int, detail: Any) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status)

    def no_model_yet() -> JSONResponse:
        return JSONResponse({"status": "no model yet", "detail": f"no champion in {holder.root} yet: train one "
                             "(make train); it is served as soon as it is registered"}, status_code=503)

    @app.get("/health", response_model=Health, responses={503: {"description": "no model registered yet"}})
    def health():
        if holder.current is None:
            return no_model_yet()
        return Health(status="degraded" if holder.reload_error else "ok", model_name=holder.name,
                      model_version=holder.version, alias=holder.alias, reload_error=holder.reload_error)

    @app.get("/model", response_model=ModelInfo, responses={503: {"description": "no model registered yet"}})
    def model_info():
        if holder.current is None:
            return no_model_yet()
        meta = holder.current.model.metadata
        return ModelInfo(
            model_name=holder.name, model_version=holder.version, family=meta.get("family"), task=meta.get("task"),
            target=meta.get("target"), classes=meta.get("classes", []), metric=meta.get("metric"),
            test_metrics={k: _number(v) for k, v in meta.get("test_metrics", {}).items()},
            valid_metrics={k: _number(v) for k, v in meta.get("valid_metrics", {}).items()},
            decision_threshold=meta.get("decision_threshold"), data_sha256=meta.get("data_sha256"),
            prediction_interval=meta.get("prediction_interval"),
            config_hash=meta.get("config_hash"), registered_at=meta.get("registered_at"), run_id=meta.get("run_id"),
            input_schema=[{"name": c.name, "kind": c.kind, "dtype": c.dtype} for c in holder.current.schema.columns],
        )

    problems = {
        400: {"model": ErrorResponse, "description": "the body is not JSON"},
        413: {"model": ErrorResponse, "description": f"more than {max_body_bytes:,} bytes or {max_rows:,} rows"},
        422: {"model": ErrorResponse, "description": "a row lacks a feature or holds a value of the wrong type"},
    }
    body_schema = {"type": "array", "minItems": 1, "maxItems": max_rows, "items": {"$ref": "#/components/schemas/Row"}}

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True, responses=problems,
              openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}})
    async def predict(request: Request):
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return error(413, f"request body of {int(declared):,} bytes is over the limit of {max_body_bytes:,}; "
                              "send fewer rows per request")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > max_body_bytes:
                return error(413, f"request body is over the limit of {max_body_bytes:,} bytes; send fewer rows "
                                  "per request")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return error(400, f"the body is not valid JSON ({exc}); send a JSON list of row objects")
        except RecursionError:
            return error(400, "the body nests JSON too deeply to read; send a JSON list of flat row objects")
        served = holder.current  # this request's version, whatever the reload thread does meanwhile
        if served is None:
            return no_model_yet()
        if isinstance(payload, list) and len(payload) > max_rows:
            return error(413, f"{len(payload):,} rows in one request; the limit is {max_rows:,}")
        if isinstance(payload, list) and not payload:
            return error(422, [{"loc": ["body"], "msg": "send at least one row", "type": "too_short"}])
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(_answer, served, payload)  # validation and scoring off the event loop

    def _answer(served: Served, payload: Any):
        try:
            rows = served.rows.validate_python(payload)
        except ValidationError as exc:
            return error(422, _errors(exc))
        frame = pd.DataFrame([row.model_dump(by_alias=True) for row in rows], columns=served.schema.names)
        try:
            scored = score_frame(served.model, served.schema, frame, served.model.version)
        except SchemaError as exc:
            where = ["body"] if exc.column is None else ["body", exc.row or 0, exc.column]
            return error(422, [{"loc": where, "msg": str(exc), "type": "value_error"}])
        if "prediction_lower" in scored.columns:  # a regression: the number and its interval
            rows = scored[["prediction", "prediction_lower", "prediction_upper"]].to_numpy(dtype=float).tolist()
            return PredictResponse(model_name=served.model.name, model_version=served.model.version,
                                   predictions=[RowPrediction(prediction=p, interval=(lo, hi)) for p, lo, hi in rows])
        proba_columns = [c for c in scored.columns if c.startswith("proba_")]
        names = [c.removeprefix("proba_") for c in proba_columns]
        probabilities = scored[proba_columns].to_numpy().tolist()
        labels = [_plain(v) for v in scored["prediction"].tolist()]
        return PredictResponse(
            model_name=served.model.name, model_version=served.model.version,
            predictions=[RowPrediction(prediction=label, probabilities=dict(zip(names, p, strict=True)))
                         for label, p in zip(labels, probabilities, strict=True)])

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None or app.state.spec_version != holder.version:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            row = holder.current.row_schema if holder.current is not None else {"type": "object"}
            spec.setdefault("components", {}).setdefault("schemas", {})["Row"] = row
            app.openapi_schema, app.state.spec_version = spec, holder.version
        return app.openapi_schema

    app.state.spec_version = None
    app.openapi = openapi
    return app


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a registered gauntlet model over HTTP.")
    parser.add_argument("--registry", default="artifacts/registry", help="registry folder (default artifacts/registry)")
    parser.add_argument("--model", default=None, help="model name (default: the registry's only model)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--alias", default="champion", help="alias to serve and follow (default champion)")
    which.add_argument("--version", type=int, default=None, help="serve this version, and never reload")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--reload-every", type=float, default=2.0, metavar="SECONDS",
                        help="how often to look for a moved alias (default 2; 0: never)")
    parser.add_argument("--wait-for-model", action="store_true",
                        help="start with an empty registry: /health answers 503 until a champion is registered")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        holder = ModelHolder(args.registry, args.model, args.alias, args.version, args.reload_every or None,
                             wait=args.wait_for_model)
    except GauntletError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    import uvicorn

    app = create_app(holder, args.max_body_bytes, args.max_rows)
    log.info("serving %s version %s on http://%s:%d (OpenAPI: /docs)", holder.name or "(waiting for a model)",
             holder.version, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    holder.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
