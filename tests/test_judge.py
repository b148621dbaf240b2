"""The LLM judge against a small local HTTP server on 127.0.0.1: the request, the rating, bounded retries on
500, a down server that stops being asked, and the generate command carrying on with null scores."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import langneurons as ln
from langneurons.cli.main import main
from langneurons.evaluation.judge import (
    KEY_ENV,
    PROMPT_TEMPLATE,
    Judge,
    chat_endpoint,
    parse_rating,
)


class Server:
    """A chat-completions endpoint on 127.0.0.1 that answers with ``reply`` (or the HTTP ``status``)."""

    def __init__(self, reply: str = "Fine answer. Rating: [[7]]", status: int = 200) -> None:
        self.reply, self.status, self.requests = reply, status, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if server.status != 200:
                    self.send_response(server.status)
                    self.end_headers()
                    return
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": server.reply}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_parse_rating_and_endpoint():
    assert parse_rating("Good. Rating: [[8]]") == 8.0
    assert parse_rating("Rating: [[6.5]] and [[9]]") == 6.5
    assert parse_rating("Rating: [4]") == 4.0
    assert parse_rating("Rating: [[11]]") is None and parse_rating("no rating") is None
    assert chat_endpoint("http://127.0.0.1:1/v1") == "http://127.0.0.1:1/v1/chat/completions"
    assert chat_endpoint("http://127.0.0.1:1/v1/chat/completions/") == "http://127.0.0.1:1/v1/chat/completions"
    with pytest.raises(ln.LangNeuronsError, match="http"):
        chat_endpoint("ftp://127.0.0.1/v1")
    with pytest.raises(ln.LangNeuronsError, match=KEY_ENV):
        chat_endpoint("http://user:secret@127.0.0.1/v1")


def test_scores_with_the_mt_bench_prompt(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    with Server() as server:
        judge = Judge(server.url, "judge-model", timeout=5)
        result = judge.score("What is 2+2?", "4")
    assert result.score == 7.0 and result.reason is None and "Rating" in result.explanation
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0
    assert body["messages"][1]["content"] == PROMPT_TEMPLATE.format(question="What is 2+2?", answer="4")
    assert "[[rating]]" in body["messages"][1]["content"]
    assert "sk-test" not in json.dumps(judge.describe())


def test_unparsable_rating_is_null_with_reason():
    with Server(reply="I cannot rate this.") as server:
        result = Judge(server.url, "m", timeout=5).score("q", "a")
    assert result.score is None and "no [[rating]]" in result.reason


def test_server_error_is_retried_a_bounded_number_of_times_then_the_judge_is_down():
    sleeps: list[float] = []
    with Server(status=500) as server:
        judge = Judge(server.url, "m", timeout=5, retries=2, backoff=0.5, max_consecutive_failures=2,
                      sleep=sleeps.append)
        results = judge.score_many([("q1", "a"), ("q2", "a"), ("q3", "a"), ("q4", "a")])
    assert len(server.requests) == 2 * 3  # two items x (1 + 2 retries), then no more requests
    assert sleeps == [0.5, 1.0, 0.5, 1.0]  # exponential backoff
    assert all(r.score is None for r in results)
    assert "HTTP 500" in results[0].reason and "judge down" in results[2].reason and judge.is_down


def test_client_error_is_not_retried():
    with Server(status=400) as server:
        result = Judge(server.url, "m", timeout=5, retries=3, sleep=lambda s: None).score("q", "a")
    assert len(server.requests) == 1 and result.score is None and "HTTP 400" in result.reason


def test_unreachable_server_does_not_block():
    judge = Judge(closed_port_url(), "m", timeout=2, retries=1, max_consecutive_failures=1, sleep=lambda s: None)
    results = judge.score_many([("q", "a")] * 5)
    assert judge.requests == 2 and all(r.score is None for r in results)
    assert "unreachable" in results[0].reason and "judge down" in results[-1].reason


def test_generate_command_with_a_judge(tmp_path, llama_dir, capsys):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "aa.txt").write_text("abc def\nghij\n")
    with Server(reply="Rating: [[3]]") as server:
        code = main(["generate", "--model", str(llama_dir), "--prompts", str(prompts), "--max-new-tokens", "4",
                     "--judge-url", server.url, "--judge-model", "m", "--out", str(tmp_path / "ok"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "ok" / "generations.jsonl").read_text().splitlines()]
    assert [r["judge_score"] for r in records] == [3.0, 3.0] and len(server.requests) == 2
    assert server.requests[0]["body"]["messages"][1]["content"].count("abc def") == 1
    meta = json.loads((tmp_path / "ok" / "meta.json").read_text())
    assert meta["judge"]["model"] == "m" and meta["judge"]["prompt"] == "mt-bench single-v1"
    # a down judge: the outputs are still written, with null scores and the reason
    code = main(["generate", "--model", str(llama_dir), "--prompts", str(prompts), "--max-new-tokens", "4",
                 "--judge-url", closed_port_url(), "--judge-model", "m", "--judge-retries", "0",
                 "--out", str(tmp_path / "down"), "--no-progress"])
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "down" / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["judge_score"] is None and r["judge_reason"] for r in records)


def test_a_server_that_never_answers_costs_max_timeouts_requests():
    with socket.socket() as sock:  # accepts connections (backlog) but never reads or answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        judge = Judge(url, "m", timeout=0.3, retries=3, max_consecutive_failures=3, max_timeouts=2,
                      sleep=lambda s: None)
        results = judge.score_many([("q", "a")] * 4)
    assert judge.requests == 2 and judge.is_down
    assert "no answer within 0.3 s" in results[0].reason and "judge down" in results[-1].reason
    assert all(r.score is None for r in results)


def test_a_timeout_followed_by_an_answer_keeps_the_judge():
    with Server() as server:
        judge = Judge(server.url, "m", timeout=5, retries=2, max_timeouts=2, sleep=lambda s: None)
        calls = {"n": 0}
        real = judge._request

        def flaky(question, answer):
            calls["n"] += 1
            if calls["n"] % 2:  # every other request times out
                raise TimeoutError("timed out")
            return real(question, answer)

        judge._request = lambda q, a: _wrap_timeout(flaky, q, a)
        results = judge.score_many([("q", "a")] * 3)
    assert [r.score for r in results] == [7.0, 7.0, 7.0] and not judge.is_down


def _wrap_timeout(function, question, answer):
    from langneurons.evaluation.judge import _Retryable

    try:
        return function(question, answer)
    except TimeoutError:
        raise _Retryable("no answer", timed_out=True) from None
