"""`fitline serve-model`: a real uvicorn server on 127.0.0.1 over real ONNX Runtime sessions."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn

from stages.core.io import file_digest
from stages.serving.predict import predict_frame
from stages.serving.server import ModelService, RequestError, create_app, parse_payload
from tests.serving.test_predict import FEATURES, classification_onnx, regression_onnx, rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A uvicorn server in a thread of this process, stopped at the end of the test."""

    def __init__(self, model_path, max_body: int = 1 << 20) -> None:
        self.port = _free_port()
        app = create_app(ModelService(model_path, threads=1), max_body)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def reg_server(tmp_path_factory):
    path = regression_onnx(tmp_path_factory.mktemp("srv") / "reg.onnx")
    with Running(path) as client:
        yield client, path


@pytest.fixture(scope="module")
def cls_server(tmp_path_factory):
    path = classification_onnx(tmp_path_factory.mktemp("srv") / "cls.onnx")
    with Running(path) as client:
        yield client, path


def test_both_payload_formats_give_predicts_predictions(reg_server):
    client, path = reg_server
    df = rows(7).drop(columns="id").assign(y=1.0)  # the target column is welcome, and ignored
    expected = predict_frame(path, df.drop(columns="y"))["prediction"].tolist()
    split = {"dataframe_split": {"columns": list(df.columns), "data": df.to_numpy().tolist()}}
    records = {"dataframe_records": df.to_dict(orient="records")}
    for payload in (split, records):
        r = client.post("/invocations", json=payload)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], expected, rtol=1e-6)


def test_classification_answers_label_and_probabilities(cls_server):
    client, path = cls_server
    df = rows(4).drop(columns="id")
    expected = predict_frame(path, df)
    r = client.post("/invocations", json={"dataframe_records": df.to_dict(orient="records")})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["label"] for p in preds] == expected["label"].tolist()
    assert set(preds[0]["probabilities"]) == {"cat", "dog", "eel"}
    np.testing.assert_allclose([p["probabilities"]["dog"] for p in preds], expected["proba_dog"], rtol=1e-6)


def test_health_ping_and_metadata(reg_server):
    client, path = reg_server
    assert client.get("/health").json() == {"status": "ok"} and client.get("/ping").status_code == 200
    meta = client.get("/metadata").json()
    assert meta["task"] == "regression" and meta["model"]["sha256"] == file_digest(path)
    assert [c["name"] for c in meta["inputs"]] == FEATURES


def _split(data, columns=FEATURES):
    return {"dataframe_split": {"columns": columns, "data": data}}


BAD = [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be an object with one of dataframe_split, dataframe_records"),
    (json.dumps({"instances": [[1, 2, 3]]}).encode(), 400, "got instances"),
    (json.dumps({"dataframe_split": {"columns": FEATURES}}).encode(), 400, "needs 'columns'"),
    (json.dumps(_split([[1.0, 2.0]])).encode(), 400, "row 0 has 2 values for 3 columns"),
    (json.dumps(_split([])).encode(), 400, "the batch has no rows"),
    (json.dumps(_split([[1.0, 2.0]], ["a", "b"])).encode(), 400, "missing feature column(s) c"),
    (json.dumps(_split([[1.0, 2.0, 3.0, 4.0]], [*FEATURES, "zz"])).encode(), 400, "unknown column(s) zz"),
    (json.dumps(_split([[1.0, "two", 3.0]])).encode(), 400, "b"),
    (json.dumps(_split([[1.0, [2.0], 3.0]])).encode(), 400, "column 'b': row 0 holds a list"),
    (json.dumps({"dataframe_records": [{"a": 1}, 5]}).encode(), 400, "dataframe_records must be a list of objects"),
    (b'{"dataframe_split": {"columns": ["a", "a", "c"], "data": [[1, 2, 3]]}}', 400, "distinct strings"),
]


@pytest.mark.parametrize(("body", "status", "words"), BAD)
def test_bad_requests_get_a_4xx_naming_the_problem(reg_server, body, status, words):
    client, _ = reg_server
    r = client.post("/invocations", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error_code"] == "BAD_REQUEST" and words in r.json()["message"]
    assert client.get("/health").status_code == 200  # still serving


def test_oversized_bodies_and_other_media_types_are_refused(tmp_path):
    path = regression_onnx(tmp_path / "reg.onnx")
    with Running(path, max_body=2000) as client:
        big = json.dumps(_split([[1.0, 2.0, 3.0]] * 200)).encode()
        r = client.post("/invocations", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "limit is 2000" in r.json()["message"]

        def chunks():  # no content-length: the limit is enforced while reading
            for _ in range(50):
                yield b" " * 100
        r = client.post("/invocations", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = client.post("/invocations", content=b"a,b,c\n1,2,3\n", headers={"content-type": "text/csv"})
        assert r.status_code == 415
        ok = client.post("/invocations", json=_split([[1.0, 2.0, 3.0]]))
        assert ok.status_code == 200


def test_parse_payload_decisions():
    df = parse_payload(b'{"dataframe_records": [{"a": 1, "b": "x"}, {"a": null, "b": "y"}]}')
    assert list(df.columns) == ["a", "b"] and df["a"].isna().tolist() == [False, True]
    with pytest.raises(RequestError, match="one of dataframe_split, dataframe_records"):
        parse_payload(b'{"dataframe_split": {}, "dataframe_records": []}')
    assert isinstance(parse_payload(b'{"dataframe_split": {"columns": [], "data": []}}'), pd.DataFrame)
