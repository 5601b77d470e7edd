"""Engine, seeding and passwords. SQLite by default; any SQLAlchemy URL (PostgreSQL:
``postgresql+psycopg://...``) when one is given."""

from __future__ import annotations

import hashlib
import hmac
import os

from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session

from .models import Base, Project, Task, User

DATABASE_URL_ENV = "FASTAPI_APP_DATABASE_URL"
USERS = 20
PROJECTS_PER_USER = 30
TASKS_PER_PROJECT = 4
PASSWORD = "correct horse"  # every demo user's


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # one connection per thread: FastAPI runs sync endpoints in a thread pool
        return create_engine(url, connect_args={"check_same_thread": False})
    return create_engine(url, pool_size=10, max_overflow=20)


def hash_password(password: str, salt: str) -> str:
    # deliberately cheap for a demo (a real service would use far more iterations)
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 1_000).hex()


def check_password(user: User, password: str) -> bool:
    return hmac.compare_digest(user.password_hash, hash_password(password, user.salt))


def seed(engine: Engine) -> None:
    """Create the tables and the deterministic demo data, once."""
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        if session.scalar(select(func.count()).select_from(User)):
            return
        for u in range(USERS):
            salt = f"salt{u:04d}"
            user = User(username=f"user{u}", salt=salt, password_hash=hash_password(PASSWORD, salt))
            user.projects = [
                Project(
                    name=f"project {u}-{p}",
                    tasks=[
                        Task(title=f"task {u}-{p}-{t}", done=t % 2 == 0)
                        for t in range(TASKS_PER_PROJECT)
                    ],
                )
                for p in range(PROJECTS_PER_USER)
            ]
            session.add(user)
        session.commit()


def default_url() -> str:
    return os.environ.get(DATABASE_URL_ENV, "sqlite:///fastapi_app.db")
