"""`fitline serve-model`: the exported model behind HTTP, speaking MLflow's scoring protocol.

    POST /invocations  {"dataframe_split": {"columns": [...], "data": [[...], ...]}}
                       or {"dataframe_records": [{...}, ...]}
                    -> {"predictions": [...]}   regression: one number per row;
                       classification: {"label": ..., "probabilities": {class: p, ...}} per row
    GET  /health, /ping -> {"status": "ok"}
    GET  /metadata      -> task, input schema, classes, the model file's sha256, the run's metrics

One ONNX Runtime session serves every request (ORT's run is thread-safe); no torch import.
A bad request (malformed JSON, an unknown payload format, missing or unknown columns, wrong
value types, ragged rows, an empty batch, a body over the size limit) is a 4xx with one
message naming the problem, never a 5xx: every expected failure is a DataError or a
RequestError before the model runs.
"""


import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.core.contracts import METRICS_FILES
from stages.core.errors import DataError
from stages.core.io import file_digest
from stages.serving.predict import OnnxModel, predict_frame

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 16 * 2**20  # bytes of one request body
PAYLOAD_FORMATS = ("dataframe_split", "dataframe_records")


class RequestError(Exception):
    """A request the server refuses: `status` (4xx) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_payload(body: bytes) -> pd.DataFrame:
    """The rows of an MLflow scoring payload as a DataFrame (columns as sent)."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(payload, dict) or len(set(payload) & set(PAYLOAD_FORMATS)) != 1:
        keys = ", ".join(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise RequestError(400, f"the body must be an object with one of {', '.join(PAYLOAD_FORMATS)} (got {keys})")
    if "dataframe_split" in payload:
        return _split_frame(payload["dataframe_split"])
    return _records_frame(payload["dataframe_records"])


def _split_frame(split: Any) -> pd.DataFrame:
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list) or not isinstance(split.get("data"), list):
        raise RequestError(400, "dataframe_split needs 'columns' (a list of names) and 'data' (a list of rows)")
    columns, data = split["columns"], split["data"]
    if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
        raise RequestError(400, "dataframe_split.columns must be distinct strings")
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise RequestError(400, f"dataframe_split.data row {i} has {got} values for {len(columns)} columns")
    return pd.DataFrame(data, columns=columns)


def _records_frame(records: Any) -> pd.DataFrame:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise RequestError(400, "dataframe_records must be a list of objects (one per row)")
    return pd.DataFrame.from_records(records)


def _check_values(df: pd.DataFrame) -> None:
    """JSON gives numbers, strings, booleans and null; a nested list or object in a cell is a
    wrong type for every kind of column."""
    for col in df.columns:
        nested = df[col].map(lambda v: isinstance(v, (list, dict)))
        if nested.any():
            raise RequestError(400, f"column {col!r}: row {int(np.argmax(nested.to_numpy()))} holds a "
                                    f"{type(df[col][nested].iloc[0]).__name__}, not a value")


def _number(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(v) else None
    return v.item() if isinstance(v, np.generic) else v


def predictions_json(model: OnnxModel, frame: pd.DataFrame, n_inputs: int) -> list[Any]:
    """predict_frame's prediction columns (the last ones it adds) as MLflow-style predictions."""
    preds = frame.iloc[:, n_inputs:]
    if model.task == "regression":
        return [_number(v) for v in preds.iloc[:, 0].tolist()]
    label, probas = preds.iloc[:, 0], preds.iloc[:, 1:]
    classes = [str(c) for c in model.classes or []]
    return [{"label": _number(lab), "probabilities": {c: _number(p) for c, p in zip(classes, row)}}
            for lab, row in zip(label.tolist(), probas.itertuples(index=False))]


class ModelService:
    """What the HTTP layer calls: one loaded model and its metadata."""

    def __init__(self, model_path: str | Path, metrics_root: str | Path = ".", threads: int | None = None) -> None:
        self.model = OnnxModel(model_path, threads=threads)
        self.sha256 = file_digest(model_path)
        self.metrics = _run_metrics(Path(metrics_root))

    def predict(self, body: bytes) -> dict[str, Any]:
        df = parse_payload(body)
        if len(df) == 0:
            raise RequestError(400, "the batch has no rows")
        _check_values(df)
        # the original file's rows are welcome (its target and the columns ingest dropped are
        # ignored); any other column is a typo or the wrong model
        known = {*self.model.feature_names, self.model.info.get("target"), *(self.model.info.get("dropped") or {})}
        unknown = [str(c) for c in df.columns if c not in known]
        if unknown:
            raise RequestError(400, f"unknown column(s) {', '.join(unknown)}; the model takes "
                                    f"{', '.join(self.model.feature_names)}")
        try:
            frame = predict_frame(self.model, df[[c for c in df.columns if c in self.model.feature_names]],
                                  where="request")
        except DataError as exc:
            raise RequestError(400, str(exc)) from None
        return {"predictions": predictions_json(self.model, frame, 0)}

    def metadata(self) -> dict[str, Any]:
        info = self.model.info
        return {"task": self.model.task, "target": info.get("target"), "classes": self.model.classes,
                "inputs": info.get("columns") or [{"name": n, "kind": "numeric"} for n in self.model.feature_names],
                "model": {"path": str(self.model.path), "sha256": self.sha256}, "metrics": self.metrics}


def _run_metrics(root: Path) -> dict[str, Any]:
    """The run's metrics files beside the model (the workspace's), where they exist."""
    out = {}
    for name, rel in METRICS_FILES.items():
        try:
            out[name] = json.loads((root / rel).read_text())
        except (OSError, ValueError):
            continue
    return out


def default_threads() -> int:
    """ORT intra-op threads per request: requests already run side by side on the server's
    thread pool, so one each keeps the cores busy without threads fighting over them."""
    return 1 if (os.cpu_count() or 1) <= 4 else 2


def create_app(service: ModelService, max_body: int = DEFAULT_MAX_BODY) -> Any:
    """The ASGI app: the routes above, every refusal a JSON {error_code, message} with its 4xx."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="fitline model", docs_url=None, redoc_url=None, openapi_url=None)

    def refuse(status: int, message: str) -> JSONResponse:
        code = {400: "BAD_REQUEST", 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}.get(status, "INVALID")
        return JSONResponse({"error_code": code, "message": message}, status_code=status)

    @app.get("/health")
    @app.get("/ping")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return service.metadata()

    @app.post("/invocations")
    async def invocations(request: Request) -> JSONResponse:
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if kind not in ("application/json", ""):
            return refuse(415, f"content type {kind!r}: send application/json")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            return refuse(413, f"the body is {int(declared)} bytes; the limit is {max_body} (--max-body-bytes)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                return refuse(413, f"the body is over the limit of {max_body} bytes (--max-body-bytes)")
        try:
            return JSONResponse(await run_in_threadpool(service.predict, bytes(body)))
        except RequestError as exc:
            return refuse(exc.status, str(exc))

    return app


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 8080, max_body: int = DEFAULT_MAX_BODY,
          metrics_root: str | Path = ".") -> None:
    """Load the model once and serve it until interrupted."""
    import uvicorn

    service = ModelService(model_path, metrics_root, threads=default_threads())
    log.info("serving %s (%s, %d inputs) on http://%s:%d", service.model.path, service.model.task,
             len(service.model.feature_names), host, port)
    uvicorn.run(create_app(service, max_body), host=host, port=port, log_level="warning", access_log=False)
