"""Schemathesis fuzzes ``memctl serve`` from the OpenAPI document it serves: generated
bodies for every operation, with a valid agent key. No answer may be a 5xx, and every
answer must match what the document says (status, content type, schema). The change feed
is left out: with a valid key it streams until the client leaves, which schemathesis
counts as a timeout (tests/service/test_changes.py covers its refusals)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from memory import ops as ops
from tests.service.processes import served

ST = str(Path(sys.executable).with_name("st"))
FEED = "/v1/changes"
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance"
)


def test_no_generated_request_gets_a_5xx_or_an_undocumented_answer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    ops.migrate(url)
    secret = ops.create_key(url, "fuzzer", users=["ada"]).secret
    with served(url, tmp_path / "serve.log", MEMORY_SERVICE_LOG_LEVEL="warning") as server:
        document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
        operations = sum(len(methods) for methods in document["paths"].values()) - 1  # FEED
        run = subprocess.run(
            [
                ST, "run", f"{server.url}/openapi.json",
                "-H", f"Authorization: Bearer {secret}",
                "--exclude-path", FEED,
                "--checks", CHECKS,
                "--phases", "examples,fuzzing",
                "--max-examples", "10",
                "--request-timeout", "10",
                "--seed", "17",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,  # schemathesis writes its cassettes and caches here
            timeout=300,
        )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert f"Tested: {operations}" in run.stdout, run.stdout[-2000:]
