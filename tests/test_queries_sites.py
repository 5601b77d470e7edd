"""Call sites: the line of the user's code that sent a statement, past every library frame.

A real SQLModel application (written as a user would, run with pytester), the user's own
database wrappers listed in ``perf_library_modules``, the classification rule, and the cache
of recent sites (alternating lines, callbacks inside library calls, threads, async engines).
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ForeignKey, String, create_engine, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncAttrs, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from pytest_bridgeperf.queries import QueryCapture, sites

# -- a SQLModel application, as its authors write it -------------------------------------------

MODELS = """
from typing import List, Optional
from sqlmodel import Field, Relationship, SQLModel


class Team(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str
    heroes: List["Hero"] = Relationship(back_populates="team")


class Hero(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str
    team_id: Optional[int] = Field(default=None, foreign_key="team.id")
    team: Optional[Team] = Relationship(back_populates="heroes")
"""

# the team's own thin layer over SQLModel: what perf_library_modules is for
DB = """
from sqlmodel import Session, create_engine, select


def make_engine(url):
    return create_engine(url)


def all_of(session: Session, model):
    return session.exec(select(model).order_by(model.id)).all()


def heroes_of(team):
    return list(team.heroes)
"""

SERVICES = """
from heroapp import db
from heroapp.models import Team


def roster(session):
    teams = db.all_of(session, Team)  # LINE-TEAMS
    return {team.name: [hero.name for hero in team.heroes] for team in teams}  # LINE-LAZY


def roster_via_wrapper(session):
    teams = db.all_of(session, Team)
    return {team.name: [hero.name for hero in db.heroes_of(team)] for team in teams}  # LINE-W
"""

TESTS = """
import pytest
from sqlmodel import Session, SQLModel

from heroapp import db, services
from heroapp.models import Hero, Team


@pytest.fixture
def engine(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'heroes.db'}")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        for t in range(4):
            team = Team(name=f"team{t}")
            session.add(team)
            session.add_all(Hero(name=f"hero{t}.{h}", team=team) for h in range(2))
        session.commit()
    yield engine
    engine.dispose()


def test_roster(perf_queries, engine):
    with perf_queries(engine) as q, Session(engine) as session:
        services.roster(session)
    q.assert_no_n_plus_one()


def test_roster_via_wrapper(perf_queries, engine):
    with perf_queries(engine) as q, Session(engine) as session:
        services.roster_via_wrapper(session)
    q.assert_no_n_plus_one()


@pytest.mark.perf(queries=1)
def test_budget(engine):
    with Session(engine) as session:
        services.roster(session)
"""


def _line(source: str, marker: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if marker in line)


@pytest.fixture
def heroapp(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.mkpydir("heroapp")
    pytester.path.joinpath("heroapp", "models.py").write_text(MODELS, encoding="utf-8")
    pytester.path.joinpath("heroapp", "db.py").write_text(DB, encoding="utf-8")
    pytester.path.joinpath("heroapp", "services.py").write_text(SERVICES, encoding="utf-8")
    pytester.makepyfile(test_heroes=TESTS)
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # a subprocess: SQLModel's and SQLAlchemy's registries must not outlive the run
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)


LAZY_LOAD = "SELECT hero.id, hero.name, hero.team_id FROM hero WHERE ? = hero.team_id"


def test_sqlmodel_app_n_plus_one_names_the_app_line(heroapp: pytest.Pytester) -> None:
    heroapp.makeini("[pytest]\n")
    result = _run(heroapp)
    result.assert_outcomes(failed=2, skipped=1)
    lazy = _line(SERVICES, "LINE-LAZY")
    teams_in_db = _line(DB, "session.exec")
    heroes_in_db = _line(DB, "list(team.heroes)")
    result.stdout.fnmatch_lines(
        [
            "*test_roster *",
            "*N+1 queries: 1 statement(s) repeated from one call site (threshold 3):",
            f"*×4 at heroapp/services.py:{lazy}",
            f"*{LAZY_LOAD}",
            "*1. ×1  SELECT team.id, team.name FROM team ORDER BY team.id",
            # the team's wrapper is user code until the ini says otherwise
            f"*at heroapp/db.py:{teams_in_db}",
            "*test_roster_via_wrapper*",
            f"*×4 at heroapp/db.py:{heroes_in_db}",
        ]
    )
    # never inside SQLModel or SQLAlchemy
    assert "sqlmodel/" not in result.stdout.str()
    assert "sqlalchemy/" not in result.stdout.str()


def test_wrapper_modules_in_the_ini_are_skipped(heroapp: pytest.Pytester) -> None:
    heroapp.makeini("[pytest]\nperf_library_modules =\n    heroapp.db\n")
    result = _run(heroapp)
    result.assert_outcomes(failed=2, skipped=1)
    result.stdout.fnmatch_lines(
        [
            f"*×4 at heroapp/services.py:{_line(SERVICES, 'LINE-LAZY')}",
            f"*at heroapp/services.py:{_line(SERVICES, 'LINE-TEAMS')}",
            "*test_roster_via_wrapper*",
            f"*×4 at heroapp/services.py:{_line(SERVICES, 'LINE-W')}",
        ]
    )
    assert "heroapp/db.py" not in result.stdout.str()
    # the marker's whole-body count lists the same sites
    budget = _run(heroapp, "--perf", "--perf-baseline=b.json", "-k", "budget")
    budget.assert_outcomes(failed=1)
    budget.stdout.fnmatch_lines(
        [
            "*queries: queries 5 (budget ≤ 1)*",
            f"*at heroapp/services.py:{_line(SERVICES, 'LINE-TEAMS')}",
        ]
    )
    assert "heroapp/db.py" not in budget.stdout.str()


def test_ini_is_documented_and_validated(heroapp: pytest.Pytester) -> None:
    heroapp.makeini("[pytest]\n")
    _run(heroapp, "--help").stdout.fnmatch_lines(["*perf_library_modules*"])
    heroapp.makeini("[pytest]\nperf_library_modules = heroapp/db.py\n")
    result = _run(heroapp)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*ini perf_library_modules: 'heroapp/db.py' is not a module name*"]
    )


# -- the rule --------------------------------------------------------------------------------------


@pytest.fixture
def no_extra_modules() -> Iterator[None]:
    before = sites.library_modules()
    sites.configure(())
    yield
    sites.configure(before)


VENV = "/srv/venv/lib/python3.11/site-packages"


@pytest.mark.usefixtures("no_extra_modules")
@pytest.mark.parametrize(
    ("filename", "module", "kind"),
    [
        ("<frozen importlib._bootstrap>", "importlib._bootstrap", sites.LIBRARY),
        ("<string>", None, sites.THIRD_PARTY),
        (f"{VENV}/sqlmodel/orm/session.py", "sqlmodel.orm.session", sites.LIBRARY),
        ("/src/sqlalchemy/lib/sqlalchemy/orm/query.py", "sqlalchemy.orm.query", sites.LIBRARY),
        ("/srv/app/concurrent_helpers.py", "concurrent_helpers", sites.USER),
        ("/usr/lib/python3/dist-packages/pagination/api.py", "pagination.api", sites.THIRD_PARTY),
        (f"{VENV}/myapp/db.py", "myapp.db", sites.THIRD_PARTY),
        (sys.modules["threading"].__file__, "threading", sites.LIBRARY),
        (sys.modules["json"].__file__, "json", sites.LIBRARY),  # the standard library by path
        ("/srv/app/myapp/db.py", "myapp.db", sites.USER),
        ("/srv/app/tests/test_api.py", "test_api", sites.USER),
    ],
)  # fmt: skip
def test_classification(filename: str, module: str | None, kind: int) -> None:
    assert sites._classify(filename, module) == kind


def test_user_modules_match_by_dotted_prefix(no_extra_modules: None) -> None:
    sites.configure(["myapp.db"])
    assert sites._classify("/srv/app/myapp/db/__init__.py", "myapp.db") == sites.LIBRARY
    assert sites._classify("/srv/app/myapp/db/session.py", "myapp.db.session") == sites.LIBRARY
    assert sites._classify("/srv/app/myapp/dbx.py", "myapp.dbx") == sites.USER
    assert sites._classify("/srv/app/myapp/api.py", "myapp.api") == sites.USER
    with pytest.raises(ValueError, match="not a module name"):
        sites.validate_module_name("myapp/db.py")
    assert sites.validate_module_name(" myapp.db.* ") == "myapp.db"
    with pytest.raises(ValueError, match="not a module name"):
        QueryCapture(library_modules=["my-app"])


# -- the cache of recent sites ---------------------------------------------------------------------


class Base(AsyncAttrs, DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    books: Mapped[list[Book]] = relationship(back_populates="author")
    awards: Mapped[list[Award]] = relationship()


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


class Award(Base):
    __tablename__ = "awards"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))


def _here(marker: str) -> str:
    source, _ = inspect.getsourcelines(sys.modules[__name__])
    number = next(i for i, line in enumerate(source, 1) if marker in line and "_here(" not in line)
    return f"tests/test_queries_sites.py:{number}"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'sites.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(
            Author(id=i, name=f"a{i}", books=[Book(title=f"b{i}")], awards=[Award()])
            for i in range(1, 6)
        )
        session.commit()
    yield engine
    engine.dispose()


def _sites_by_table(q: QueryCapture) -> dict[str, set[str | None]]:
    found: dict[str, set[str | None]] = {}
    for statement in q.statements:
        table = statement.fingerprint.split(" FROM ")[1].split()[0]
        found.setdefault(table, set()).add(statement.call_site)
    return found


def test_alternating_lines_are_each_named(engine: Engine) -> None:
    with QueryCapture(engine) as q, Session(engine) as session:
        for author in session.scalars(select(Author)):  # SITE-AUTHORS
            _ = author.books  # SITE-BOOKS
            _ = author.awards  # SITE-AWARDS
    assert _sites_by_table(q) == {
        "authors": {_here("# SITE-AUTHORS")},
        "books": {_here("# SITE-BOOKS")},
        "awards": {_here("# SITE-AWARDS")},
    }


def polymorphic_fetch(session: Session, i: int) -> None:
    session.execute(select(Book).where(Book.id == i)).all()  # SITE-USER-FETCH


def test_the_cache_never_hides_a_user_frame_inside_a_library_call(engine: Engine) -> None:
    # A flush sends INSERTs from the flush line; a listener (user code) that SQLAlchemy calls
    # inside that flush sends a query of its own: that query is the listener's, whatever the
    # cache learned from the INSERTs.
    @event.listens_for(Session, "before_flush")
    def audit(session: Session, flush_context: Any, instances: Any) -> None:
        session.connection().execute(text("SELECT count(*) FROM books")).all()  # SITE-LISTENER

    try:
        with QueryCapture(engine) as q, Session(engine) as session:
            for i in range(3):
                session.add(Book(title=f"new{i}", author_id=1))
                session.flush()  # SITE-FLUSH
            # the same call, once to library code and once through a user function
            for fetch in (session.get, lambda model, i: polymorphic_fetch(session, i)):
                for i in range(1, 4):
                    session.expunge_all()
                    fetch(Book, i)  # SITE-FETCH
    finally:
        event.remove(Session, "before_flush", audit)
    listed = {(s.sql.split()[0], s.call_site) for s in q.statements}
    assert ("INSERT", _here("# SITE-FLUSH")) in listed
    assert ("SELECT", _here("# SITE-LISTENER")) in listed
    assert not any(s.call_site == _here("# SITE-FLUSH") for s in q.statements if "count" in s.sql)
    fetched = [s.call_site for s in q.statements if "books.id = ?" in s.sql]
    assert fetched.count(_here("# SITE-FETCH")) == 3
    assert fetched.count(_here("# SITE-USER-FETCH")) == 3


def test_threads_and_their_own_stacks(engine: Engine) -> None:
    def worker(depth: int) -> None:
        if depth:
            worker(depth - 1)
            return
        with engine.connect() as conn:
            for _ in range(3):
                conn.execute(text("SELECT 1"))  # SITE-THREAD

    with QueryCapture(engine) as q:
        threads = [threading.Thread(target=worker, args=(d,)) for d in (0, 3, 7)]
        for thread in threads:
            thread.start()
        with engine.connect() as conn:
            for _ in range(3):
                conn.execute(text("SELECT 2"))  # SITE-MAIN
        for thread in threads:
            thread.join()
    by_sql = {s.sql: set() for s in q.statements}
    for statement in q.statements:
        by_sql[statement.sql].add(statement.call_site)
    assert by_sql == {"SELECT 1": {_here("# SITE-THREAD")}, "SELECT 2": {_here("# SITE-MAIN")}}


def _installed_package(root: Path, source: str) -> Any:
    """A module that lives in a site-packages directory, as an installed package would."""
    package = root / "site-packages" / "thirdparty_helper"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")
    sys.path.insert(0, str(root / "site-packages"))
    try:
        return importlib.import_module("thirdparty_helper")
    finally:
        sys.path.remove(str(root / "site-packages"))


def test_third_party_code_is_named_only_without_user_code(engine: Engine, tmp_path: Path) -> None:
    helper = _installed_package(
        tmp_path,
        """
        from sqlalchemy import text

        def count(engine):
            with engine.connect() as conn:
                return conn.execute(text("SELECT count(*) FROM books")).scalar()  # HELPER
        """,
    )
    try:
        with QueryCapture(engine) as q:
            helper.count(engine)  # SITE-CALLS-HELPER
            # a thread that runs nothing but installed code: the helper's line it is
            thread = threading.Thread(target=helper.count, args=(engine,))
            thread.start()
            thread.join()
    finally:
        del sys.modules["thirdparty_helper"]
    first, second = (s.call_site for s in q.statements)
    assert first == _here("# SITE-CALLS-HELPER")
    assert second is not None
    assert second.endswith("site-packages/thirdparty_helper/__init__.py:6"), second


@pytest.mark.asyncio
async def test_async_engine_sites_through_the_greenlet(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine) as session:
        session.add_all(Author(id=i, name=f"a{i}", books=[Book(title="t")]) for i in range(3))
        await session.commit()
    with QueryCapture(engine) as q:
        async with AsyncSession(engine) as session:
            for author in (await session.scalars(select(Author))).all():  # ASYNC-AUTHORS
                await author.awaitable_attrs.books  # ASYNC-LAZY
        async with engine.connect() as conn:
            for _ in range(3):  # two lines of one coroutine, alternating, the same way down
                await conn.execute(select(Author.name))  # ASYNC-ONE
                await conn.execute(select(Book.title))  # ASYNC-TWO
    await engine.dispose()
    assert _sites_by_table(q) == {
        "authors": {_here("# ASYNC-AUTHORS"), _here("# ASYNC-ONE")},
        "books": {_here("# ASYNC-LAZY"), _here("# ASYNC-TWO")},
    }
    by_statement = {(s.fingerprint, s.call_site) for s in q.statements}
    assert ("SELECT authors.name FROM authors", _here("# ASYNC-ONE")) in by_statement
    assert ("SELECT books.title FROM books", _here("# ASYNC-TWO")) in by_statement
    assert len(by_statement) == 4


def test_sites_module_needs_no_pytest() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pytest"] = None
        sys.modules["_pytest"] = None
        import pytest_bridgeperf.queries.sites, pytest_bridgeperf.queries.pool
        import pytest_bridgeperf.queries.capture
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr
