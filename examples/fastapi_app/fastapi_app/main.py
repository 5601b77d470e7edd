"""The FastAPI app: ``create_app(database_url)``.

``POST /login`` → a bearer token; ``GET /projects?page=&page_size=`` → the user's projects with
their tasks, paginated; ``GET /projects/{id}``; ``GET /healthz``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from pydantic import BaseModel
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, selectinload

from .db import check_password, default_url, make_engine, seed
from .models import Project, User

MAX_PAGE_SIZE = 100


class Login(BaseModel):
    username: str
    password: str


def list_projects(
    session: Session, user_id: int, page: int, page_size: int, *, eager: bool = True
) -> dict[str, Any]:
    """One page of a user's projects with their tasks: 3 statements with ``eager`` (count, page,
    the page's tasks in one ``IN``), 2 + page_size without (a lazy load per project: N+1)."""
    total = session.scalar(
        select(func.count()).select_from(Project).where(Project.owner_id == user_id)
    )
    query = (
        select(Project)
        .where(Project.owner_id == user_id)
        .order_by(Project.id)
        .limit(page_size)
        .offset((page - 1) * page_size)
    )
    if eager:
        query = query.options(selectinload(Project.tasks))
    projects = session.scalars(query).all()
    return {
        "page": page,
        "page_size": page_size,
        "total": total,
        "projects": [
            {
                "id": p.id,
                "name": p.name,
                "tasks": [{"id": t.id, "title": t.title, "done": t.done} for t in p.tasks],
            }
            for p in projects
        ],
    }


# dependencies at module level: FastAPI resolves the (postponed) annotations in these globals
def db(request: Request) -> Iterator[Session]:
    engine: Engine = request.state.engine
    with Session(engine) as session:
        yield session


def current_user(request: Request, authorization: Annotated[str, Header()] = "") -> int:
    token = authorization.removeprefix("Bearer ")
    user_id = request.state.tokens.get(token)
    if user_id is None:
        raise HTTPException(status_code=401, detail="log in first")
    return int(user_id)


def create_app(database_url: str | None = None, *, eager: bool = True) -> FastAPI:
    """The app on ``database_url`` (default: ``$FASTAPI_APP_DATABASE_URL``, else a SQLite file).
    ``eager=False`` serves the projects with the N+1 loading pattern."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        engine = make_engine(database_url or default_url())
        seed(engine)
        yield {"engine": engine, "tokens": {}}
        engine.dispose()

    app = FastAPI(title="fastapi_app example", lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/login")
    def login(
        body: Login, request: Request, session: Annotated[Session, Depends(db)]
    ) -> dict[str, str]:
        user = session.scalar(select(User).where(User.username == body.username))
        if user is None or not check_password(user, body.password):
            raise HTTPException(status_code=401, detail="wrong username or password")
        token = secrets.token_urlsafe(16)
        request.state.tokens[token] = user.id
        return {"token": token, "user_id": str(user.id)}

    @app.get("/projects")
    def projects(
        user_id: Annotated[int, Depends(current_user)],
        session: Annotated[Session, Depends(db)],
        page: Annotated[int, Query(ge=1)] = 1,
        page_size: Annotated[int, Query(ge=1)] = 20,
    ) -> dict[str, Any]:
        return list_projects(session, user_id, page, min(page_size, MAX_PAGE_SIZE), eager=eager)

    @app.get("/projects/{project_id}")
    def project(
        project_id: int,
        user_id: Annotated[int, Depends(current_user)],
        session: Annotated[Session, Depends(db)],
    ) -> dict[str, Any]:
        found = session.get(Project, project_id)
        if found is None or found.owner_id != user_id:
            raise HTTPException(status_code=404)
        return {"id": found.id, "name": found.name, "tasks": len(found.tasks)}

    return app
