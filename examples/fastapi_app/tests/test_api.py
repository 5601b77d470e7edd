"""What the app does (ordinary tests, no --perf needed), through FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from fastapi_app import PASSWORD, create_app, list_projects
from sqlalchemy import event
from sqlalchemy.orm import Session


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(database_url)) as client:
        yield client


def _token(client: TestClient, username: str = "user3") -> str:
    response = client.post("/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200
    return str(response.json()["token"])


def test_login_and_the_projects_page(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {_token(client)}"}
    page = client.get("/projects?page=2&page_size=5", headers=headers).json()
    assert page["total"] == 30
    assert [p["name"] for p in page["projects"]] == [f"project 3-{i}" for i in range(5, 10)]
    assert all(len(p["tasks"]) == 4 for p in page["projects"])
    clamped = client.get("/projects?page_size=1000", headers=headers).json()
    assert clamped["page_size"] == 100


def test_wrong_password_and_missing_token_are_401(client: TestClient) -> None:
    assert client.post("/login", json={"username": "user1", "password": "x"}).status_code == 401
    assert client.get("/projects").status_code == 401
    assert client.get("/projects", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_a_project_of_another_user_is_404(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {_token(client, 'user0')}"}
    assert client.get("/projects/1", headers=headers).status_code == 200
    assert client.get("/projects/31", headers=headers).status_code == 404  # user1's


def _statements(session: Session, eager: bool) -> tuple[int, dict[str, object]]:
    count = [0]

    def counted(*_: object) -> None:
        count[0] += 1

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", counted)
    try:
        page = list_projects(session, 1, 1, 20, eager=eager)
    finally:
        event.remove(connection, "before_cursor_execute", counted)
    session.expunge_all()
    return count[0], page


def test_the_eager_page_takes_three_statements_the_lazy_one_twenty_two(session: Session) -> None:
    eager, page = _statements(session, eager=True)
    lazy, same = _statements(session, eager=False)
    assert (eager, lazy) == (3, 22)
    assert page == same
