"""A real PostgreSQL 15 for the tests, started by the tests themselves.

initdb + pg_ctl as the `postgres` user into a temporary directory, listening
only on a unix socket in that directory (listen_addresses=''), so no system
service and no TCP port is involved; stopped (and the directory removed) at
the end. Each kiln state directory gets its own database (created on first
use), so a test that restarts a server on the same state dir finds its
records again, and tests never see each other's builds.

Used by tests/conftest.py (the `postgres` fixture and KILN_TEST_DATABASE)
and by the API and multi-host suites."""
import hashlib
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile

BIN = "/usr/lib/postgresql/15/bin"

# The running server of this pytest session, when KILN_TEST_DATABASE asks
# for PostgreSQL (tests/conftest.py sets it); None: the tests use SQLite.
current = None


class Postgres:
    def __init__(self):
        if not os.path.exists(f"{BIN}/initdb"):
            raise RuntimeError(f"{BIN}/initdb not found: scripts/deps.sh installs postgresql-15")
        self.dir = tempfile.mkdtemp(prefix="kiln-pg-")
        self.data = os.path.join(self.dir, "data")
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o755)
        self._as_postgres(f"{BIN}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                          "-E", "UTF8", "--no-sync")
        # fsync off: a test database need not survive a power loss.
        opts = f"-k {self.dir} -c listen_addresses='' -c fsync=off -c max_connections=200"
        self._as_postgres(f"{BIN}/pg_ctl", "-D", self.data, "-l",
                          os.path.join(self.dir, "server.log"), "-o", opts, "-w", "start")
        self.created = set()

    def _as_postgres(self, *cmd):
        p = subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True,
                           text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {p.stdout}{p.stderr}")
        return p.stdout

    def psql(self, sql, db="postgres"):
        return self._as_postgres(f"{BIN}/psql", "-h", self.dir, "-U", "postgres", "-d", db,
                                 "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql)

    def url(self, db):
        return f"postgresql:///{db}?host={self.dir}&user=postgres"

    def database(self, name):
        """The URL of database `name`, created if this session has not yet."""
        if name not in self.created:
            self.psql(f'CREATE DATABASE "{name}"')
            self.created.add(name)
        return self.url(name)

    def database_for(self, state):
        """One database per kiln state directory."""
        digest = hashlib.sha256(os.path.abspath(str(state)).encode()).hexdigest()[:20]
        return self.database("k" + digest)

    def stop(self):
        subprocess.run(["runuser", "-u", "postgres", "--", f"{BIN}/pg_ctl", "-D", self.data,
                        "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def db_args(state):
    """The --database option a `kiln token`/`kiln serve` on `state` needs."""
    return ["--database", current.database_for(state)] if current else []


def dump(state):
    """The stored bytes of the state dir's database (for 'secret not stored'
    checks): the SQLite file, or pg_dump of the PostgreSQL database."""
    if not current:
        return (pathlib.Path(state) / "kiln.db").read_bytes()
    url_db = "k" + hashlib.sha256(os.path.abspath(str(state)).encode()).hexdigest()[:20]
    return subprocess.run(["runuser", "-u", "postgres", "--", f"{BIN}/pg_dump", "-h",
                           current.dir, "-U", "postgres", url_db], capture_output=True,
                          check=True, timeout=60).stdout
