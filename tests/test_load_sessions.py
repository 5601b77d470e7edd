"""Per-user sessions: ``on_start`` logs each virtual user in once, and its requests carry what
it got (headers, path, body), in both engines, against a real FastAPI app on uvicorn."""

from __future__ import annotations

import itertools
import json
import urllib.request
from collections import Counter

import pytest

pytest.importorskip("uvicorn")
fastapi = pytest.importorskip("fastapi")

from pytest_bridgeperf.load import LoadOptionError, run_load  # noqa: E402
from pytest_bridgeperf.load.sessions import VirtualUser  # noqa: E402


class Accounts:
    """An app that issues a fresh token per login and checks, on every request, that the token
    in the header belongs to the user named in the path and the body."""

    def __init__(self) -> None:
        self.logins: Counter[str] = Counter()
        self.owner: dict[str, str] = {}
        self.used: Counter[str] = Counter()
        self.mismatches = 0
        counter = itertools.count()
        app = fastapi.FastAPI()

        @app.post("/login")
        async def login(body: dict[str, str]) -> dict[str, str]:
            name = body["username"]
            self.logins[name] += 1
            token = f"t{next(counter)}-{name}"
            self.owner[token] = name
            return {"token": token}

        @app.post("/users/{name}/items")
        async def items(
            name: str, body: dict[str, str], authorization: str = fastapi.Header("")
        ) -> dict[str, int]:
            token = authorization.removeprefix("Bearer ")
            if self.owner.get(token) != name or body.get("owner") != name:
                self.mismatches += 1
                raise fastapi.HTTPException(status_code=403)
            self.used[token] += 1
            return {"n": self.used[token]}

        self.app = app


async def login(user: VirtualUser) -> dict[str, str]:
    name = f"user{user.index}"
    response = await user.post("/login", json={"username": name})
    assert response.status == 200
    return {"token": response.json()["token"], "name": name}


SESSION = {
    "on_start": login,
    "method": "POST",
    "path": "/users/{name}/items",
    "headers": {"Authorization": "Bearer {token}"},
    "json": {"owner": "{name}"},
}


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_each_user_logs_in_once_and_its_requests_carry_its_token(engine: str) -> None:
    accounts = Accounts()
    users = 6
    result = run_load(
        accounts.app,
        {**SESSION, "users": users, "duration": "0.6s", "warmup": "0.2s", "engine": engine},
    )
    assert accounts.logins == Counter({f"user{i}": 1 for i in range(users)})
    assert accounts.mismatches == 0
    assert result.errors == 0
    assert result.status_counts == {200: result.count}
    # every user sent requests, each with the token of its own login (and the logins are not
    # part of the result: they were sent before the run)
    assert len(accounts.used) == users
    assert set(accounts.used) == set(accounts.owner)
    assert sum(accounts.used.values()) >= result.count
    assert result.name == "POST /users/{name}/items"


def test_a_sync_on_start_may_use_its_own_http_client() -> None:
    accounts = Accounts()

    def sync_login(user: VirtualUser) -> dict[str, str]:
        name = f"user{user.index}"
        request = urllib.request.Request(
            user.url + "/login",
            data=json.dumps({"username": name}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return {"token": json.load(response)["token"], "name": name}

    result = run_load(accounts.app, {**SESSION, "on_start": sync_login, "users": 3, "requests": 60})
    assert accounts.logins == Counter({"user0": 1, "user1": 1, "user2": 1})
    assert result.status_counts == {200: 60}
    assert accounts.mismatches == 0


def test_a_mix_uses_the_session_in_every_request() -> None:
    accounts = Accounts()
    mix = [
        {"method": "POST", "path": "/users/{name}/items", "json": {"owner": "{name}"}, "weight": 3},
        {
            "method": "POST",
            "path": "/users/{name}/items",
            "json": {"owner": "{name}"},
            "name": "again",
        },
    ]
    result = run_load(
        accounts.app,
        {
            "on_start": login,
            "headers": {"Authorization": "Bearer {token}"},
            "mix": mix,
            "users": 4,
            "requests": 200,
        },
    )
    assert result.status_counts == {200: 200}
    assert result["again"].count == pytest.approx(50, abs=4)
    assert accounts.mismatches == 0


def test_a_placeholder_on_start_did_not_set_is_named() -> None:
    accounts = Accounts()
    with pytest.raises(LoadOptionError, match=r"uses \{nickname\}, which on_start did not set"):
        run_load(
            accounts.app,
            {"on_start": login, "path": "/users/{nickname}/items", "requests": 1},
        )


def test_an_on_start_that_raises_stops_the_run_and_names_the_user() -> None:
    async def broken(user: VirtualUser) -> None:
        if user.index == 2:
            raise PermissionError("wrong password")

    with pytest.raises(PermissionError, match="wrong password") as info:
        run_load(Accounts().app, {"on_start": broken, "users": 4, "requests": 10})
    assert "virtual user 2" in "".join(getattr(info.value, "__notes__", []))


def test_on_start_is_refused_where_it_cannot_work() -> None:
    with pytest.raises(LoadOptionError, match="callable target has none"):
        run_load(lambda: None, {"on_start": login, "requests": 1})
    with pytest.raises(LoadOptionError, match="cannot be combined with workers"):
        run_load("http://127.0.0.1:9/", {"on_start": login, "workers": 2, "users": 2})
    with pytest.raises(LoadOptionError, match="cannot be combined with hosts"):
        run_load("http://127.0.0.1:9/", {"on_start": login, "hosts": ["popen"], "users": 2})
    with pytest.raises(LoadOptionError, match="expected a function"):
        run_load(Accounts().app, {"on_start": "login", "requests": 1})


def test_without_on_start_braces_are_sent_as_they_are() -> None:
    seen: list[str] = []
    app = fastapi.FastAPI()

    @app.get("/{rest:path}")
    async def anything(rest: str) -> str:
        seen.append(rest)
        return "ok"

    run_load(app, {"path": "/a{b}", "requests": 3})
    assert seen[-1] == "a{b}"
