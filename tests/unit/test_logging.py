from __future__ import annotations

import io
import json
import logging

import structlog
from pydantic import SecretStr

from revdaemon.ops.logging import REDACTED, RedactSecrets, configure_logging


def run(processor: RedactSecrets, **event: object) -> dict[str, object]:
    return processor(None, "info", dict(event))


class TestRedactSecrets:
    def test_secret_named_keys_are_blanked(self) -> None:
        """Keys such as api_key, Authorization and nue-api-key never reach the output."""
        out = run(RedactSecrets(), api_key="k1", Authorization="Bearer abc", **{"nue-api-key": "k2"}, event="x")
        assert out == {"api_key": REDACTED, "Authorization": REDACTED, "nue-api-key": REDACTED, "event": "x"}

    def test_nested_headers_are_blanked(self) -> None:
        """Header mappings and (name, value) pair lists are cleaned by name."""
        out = run(RedactSecrets(), headers={"Authorization": "Bearer t", "Accept": "json"},
                  raw=[("nue-api-key", "k"), ("content-type", "json")])
        assert out["headers"] == {"Authorization": REDACTED, "Accept": "json"}
        assert out["raw"] == [("nue-api-key", REDACTED), ("content-type", "json")]

    def test_known_secret_values_are_scrubbed_from_text(self) -> None:
        """A configured secret inside an error message is replaced."""
        out = run(RedactSecrets(["s3cr3t-value"]), error="login failed for s3cr3t-value at host")
        assert out["error"] == f"login failed for {REDACTED} at host"

    def test_bearer_tokens_in_text_are_scrubbed(self) -> None:
        """A bearer token quoted in free text is blanked."""
        out = run(RedactSecrets(), message='sent {"Authorization": "Bearer 00D5g!AQ4AQ.x"} to host')
        assert "00D5g" not in str(out["message"])
        assert f"Bearer {REDACTED}" in str(out["message"])

    def test_bytes_header_pairs_are_blanked(self) -> None:
        """Raw h11/httpx headers as (bytes, bytes) pairs are judged by their decoded names."""
        out = run(RedactSecrets(), raw=[(b"authorization", b"Bearer abc.def"), (b"accept", b"json")])
        assert out["raw"] == [(b"authorization", REDACTED), (b"accept", "json")]

    def test_values_learned_at_run_time_are_scrubbed(self) -> None:
        """A token added after start-up is scrubbed from text like a configured secret."""
        redactor = RedactSecrets()
        redactor.add("00Dxx!session-token")
        cleaned = run(redactor, body='{"access_token":"00Dxx!session-token"}')["body"]
        assert cleaned == f'{{"access_token":"{REDACTED}"}}'

    def test_secretstr_values_are_blanked(self) -> None:
        """A SecretStr under any key is written as redacted."""
        assert run(RedactSecrets(), anything=SecretStr("x"))["anything"] == REDACTED


class TestPipeline:
    def test_json_lines_when_not_a_tty(self) -> None:
        """Off a terminal the output is one JSON object per line, with level and time, secrets redacted."""
        stream = io.StringIO()
        configure_logging(level="info", fmt="auto", secret_values=["hunter2-secret"], stream=stream)
        log = structlog.get_logger()
        log.info("write_sent", idem_key="k1", detail="password is hunter2-secret")
        log.debug("not_shown")
        [line] = stream.getvalue().splitlines()
        record = json.loads(line)
        assert record["event"] == "write_sent" and record["level"] == "info" and "timestamp" in record
        assert record["detail"] == f"password is {REDACTED}"

    def test_libraries_logging_is_one_json_line_with_its_traceback(self) -> None:
        """A library's stdlib log record (APScheduler's "Job raised an exception") comes out through the same
        pipeline: one JSON line with the logger's name and the traceback inside, secrets redacted."""
        stream = io.StringIO()
        configure_logging(level="info", fmt="json", secret_values=["hunter2-secret"], stream=stream)
        try:
            raise RuntimeError("boom with hunter2-secret")
        except RuntimeError:
            logging.getLogger("apscheduler.executors.default").exception('Job "poll" raised an exception')
        logging.getLogger("uvicorn.error").info("libraries' info is below their level")
        [line] = stream.getvalue().splitlines()
        record = json.loads(line)
        assert record["logger"] == "apscheduler.executors.default" and record["level"] == "error"
        assert record["event"] == 'Job "poll" raised an exception'
        assert "RuntimeError: boom with" in record["exception"] and "hunter2-secret" not in line
        configure_logging(level="info", fmt="json", stream=stream)  # a reload replaces the handler, not adds
        assert sum(type(h).__name__ == "_StdlibHandler" for h in logging.getLogger().handlers) == 1
