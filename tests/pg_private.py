"""A PostgreSQL server of a test's own: its own data directory (a fresh temporary folder), its own free port on
127.0.0.1, started, stopped and restarted by the test with pg_ctl. Tests that stop or restart a database server
use this, never the shared cluster that XMLSQL_TEST_PG names (other tests and people use that one).

    from pg_private import private_pg          # the pytest fixture (one server per test module)

    def test_something(private_pg):
        private_pg.target                      # odbc:Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=…;…
        private_pg.stop(); private_pg.start(); private_pg.restart()
        conn = private_pg.connect()            # pyodbc, autocommit

When the test runs as root the server runs as the `postgres` OS user (PostgreSQL refuses to run as root), through
runuser. The fixture skips with a message when initdb/pg_ctl (Debian: /usr/lib/postgresql/<v>/bin), the psqlODBC
driver or, as root, the postgres user are missing; `.ci/run` installs all of them (scripts/start_postgres.sh).
"""
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

ODBC_DRIVER = 'PostgreSQL Unicode'


def _bin_dir():
    """The folder holding initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/<v>/bin."""
    found = [shutil.which('initdb'), shutil.which('pg_ctl')]
    if all(found):
        return os.path.dirname(os.path.realpath(found[0]))
    for d in sorted(glob.glob('/usr/lib/postgresql/*/bin'), key=lambda p: _version(p), reverse=True):
        if os.access(os.path.join(d, 'initdb'), os.X_OK) and os.access(os.path.join(d, 'pg_ctl'), os.X_OK):
            return d
    return None


def _version(path):
    try:
        return float(path.split('/')[-2])
    except ValueError:
        return 0.0


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def why_unavailable():
    """None when a private server can be started here, else the reason (for pytest.skip)."""
    if _bin_dir() is None:
        return ('initdb/pg_ctl not found (on PATH or in /usr/lib/postgresql/*/bin): a private PostgreSQL server '
                'cannot be started (.ci/run installs PostgreSQL)')
    try:
        import pyodbc
    except ImportError:
        return 'pyodbc is not installed'
    if ODBC_DRIVER not in pyodbc.drivers():
        return f'the ODBC driver {ODBC_DRIVER!r} (psqlODBC) is not installed'
    if os.geteuid() == 0:
        import pwd
        try:
            pwd.getpwnam('postgres')
        except KeyError:
            return 'running as root and there is no postgres OS user to run a private server as'
        if not shutil.which('runuser'):
            return 'running as root and runuser is missing'
    return None


class PrivateServer:
    """initdb + pg_ctl in a temporary folder; `target` is the ODBC target string of its test database."""

    user = 'xmlsql_private'
    database = 'xmlsql_private'

    def __init__(self):
        self.bin = _bin_dir()
        self.base = tempfile.mkdtemp(prefix='xmlsql-pg-')        # short: it also holds the unix socket
        self.data = os.path.join(self.base, 'data')
        self.logfile = os.path.join(self.base, 'server.log')
        self.port = _free_port()
        self.password = 'pw-' + secrets.token_hex(8)
        self.as_root = os.geteuid() == 0
        if self.as_root:
            import pwd
            pw = pwd.getpwnam('postgres')
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self.target = (f'odbc:Driver={{{ODBC_DRIVER}}};Server=127.0.0.1;Port={self.port};'
                       f'Database={self.database};Uid={self.user};Pwd={self.password}')

    # ---- commands, as the postgres user when we are root
    def _cmd(self, *args, timeout=120, check=True):
        cmd = [os.path.join(self.bin, args[0]), *args[1:]]
        if self.as_root:
            cmd = ['runuser', '-u', 'postgres', '--', *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.base)
        if check and r.returncode != 0:
            raise RuntimeError(f'{args[0]} failed ({r.returncode}): {r.stderr[-1500:]}{self._log_tail()}')
        return r

    def _log_tail(self):
        try:
            with open(self.logfile, encoding='utf-8', errors='replace') as f:
                return '\nserver log: ' + f.read()[-1500:]
        except OSError:
            return ''

    def init(self):
        pwfile = os.path.join(self.base, 'pwfile')
        with open(pwfile, 'w') as f:
            f.write(self.password + '\n')
        if self.as_root:
            import pwd
            pw = pwd.getpwnam('postgres')
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        os.chmod(pwfile, 0o600)
        self._cmd('initdb', '-D', self.data, '-U', self.user, f'--pwfile={pwfile}', '--auth-local=trust',
                  '--auth-host=scram-sha-256', '-E', 'UTF8', '--locale=C', '--no-sync')
        os.remove(pwfile)
        with open(os.path.join(self.data, 'postgresql.conf'), 'a') as f:
            f.write(f"\n# xmlsql test server\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.base}'\nfsync = off\nsynchronous_commit = off\n"
                    "full_page_writes = off\nshared_buffers = 32MB\nmax_connections = 60\n")
        self.start()
        conn = self.connect(database='postgres')
        conn.execute(f'CREATE DATABASE {self.database}')
        conn.close()
        return self

    def start(self):
        self._cmd('pg_ctl', '-D', self.data, '-l', self.logfile, '-w', '-t', '60', 'start')

    def stop(self, mode='fast'):
        """Stop the server: 'fast' ends every session (clients see 'terminating connection due to administrator
        command' / 'server closed the connection'), 'immediate' is a crash-like stop."""
        self._cmd('pg_ctl', '-D', self.data, '-m', mode, '-w', '-t', '60', 'stop')

    def restart(self, mode='fast'):
        self._cmd('pg_ctl', '-D', self.data, '-m', mode, '-w', '-t', '60', 'restart', '-l', self.logfile)

    def running(self):
        return self._cmd('pg_ctl', '-D', self.data, 'status', check=False).returncode == 0

    def connect(self, database=None, attempts=60):
        """A pyodbc connection (autocommit) to the test database, waiting while the server comes up."""
        import pyodbc
        conn_str = self.target[len('odbc:'):]
        if database:
            conn_str = conn_str.replace(f'Database={self.database}', f'Database={database}')
        for i in range(attempts):
            try:
                return pyodbc.connect(conn_str, autocommit=True, timeout=5)
            except pyodbc.Error:
                if i + 1 == attempts:
                    raise
                time.sleep(0.5)

    def close(self):
        try:
            if os.path.exists(os.path.join(self.data, 'postmaster.pid')):
                self._cmd('pg_ctl', '-D', self.data, '-m', 'immediate', '-w', 'stop', check=False, timeout=60)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope='module')
def private_pg():
    """A PostgreSQL server of this test module's own (see the module docstring); stopped and removed after."""
    reason = why_unavailable()
    if reason:
        pytest.skip(reason)
    server = PrivateServer()
    try:
        server.init()
    except Exception:
        server.close()
        raise
    try:
        yield server
    finally:
        server.close()
