"""
Run rendered configurations through their own programs, on loopback and in
throwaway directories: a configuration is good when the real program accepts it.
"""

import os
import shutil
import re
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_owned_dir():
    """A temporary directory the postgres user can use (pytest's tmp is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="gopbx-check-"))
    shutil.chown(path, "postgres", "postgres")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_postgres(*command, **kwargs):
    return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, command)], capture_output=True,
                          text=True, check=False, timeout=120, **kwargs)


def _write(path, text, owner="postgres", mode=0o600):
    path.write_text(text)
    shutil.chown(path, owner, owner)
    os.chmod(path, mode)


def check_postgres(conf, hba):
    """
    Start a throwaway cluster with the rendered conf.d file and pg_hba.conf (on a
    unix socket only) and return {'file_errors', 'hba_errors', 'settings'}.
    """
    with postgres_owned_dir() as tmp:
        data = tmp / "data"
        result = as_postgres(PG_BIN / "initdb", "-D", data, "-A", "peer", "-U", "postgres")
        assert result.returncode == 0, result.stderr
        _write(data / "gopbx.conf", conf)
        _write(data / "pg_hba.conf", hba)
        with open(data / "postgresql.conf", "a") as handle:
            handle.write("\ninclude 'gopbx.conf'\n")
        # hostssl lines are only valid with SSL on, as Debian's clusters have it.
        result = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=check",
                                 "-days", "1", "-keyout", data / "server.key", "-out", data / "server.crt"],
                                capture_output=True, check=False)
        assert result.returncode == 0, result.stderr
        for name in ("server.key", "server.crt"):
            shutil.chown(data / name, "postgres", "postgres")
        port = free_port()
        options = f"-c listen_addresses='' -c unix_socket_directories={tmp} -p {port} -c ssl=on"
        result = as_postgres(PG_BIN / "pg_ctl", "-D", data, "-o", options, "-l", tmp / "log", "-w", "start")
        assert result.returncode == 0, (tmp / "log").read_text() if (tmp / "log").exists() else result.stderr
        try:
            def query(sql):
                out = as_postgres("psql", "-X", "-A", "-t", "-h", tmp, "-p", port, "-d", "postgres", "-c", sql)
                assert out.returncode == 0, out.stderr
                return [line.split("|") for line in out.stdout.splitlines() if line]

            return {
                # The check overrides where the server listens, so those settings are not applied.
                "file_errors": query("SELECT name, error FROM pg_file_settings WHERE error IS NOT NULL "
                                     "AND name NOT IN ('listen_addresses', 'port')"),
                "hba_errors": query("SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL"),
                "hba_rules": query("SELECT type, database, user_name, address, auth_method FROM pg_hba_file_rules"),
                "settings": dict(query(
                    "SELECT name, current_setting(name) FROM pg_settings WHERE name IN ('wal_level', "
                    "'max_wal_senders', 'wal_keep_size', 'max_connections', 'shared_buffers', 'password_encryption')"
                )),
            }
        finally:
            as_postgres(PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "stop")


def _replace_keys(ini, replacements):
    lines = []
    for line in ini.splitlines():
        key = line.split("=", 1)[0].strip()
        lines.append(f"{key} = {replacements[key]}" if key in replacements and "=" in line else line)
    return "\n".join(lines) + "\n"


def check_pgbouncer(ini, userlist, stats_user, stats_password):
    """
    Start pgBouncer with the rendered ini and auth file, moved to loopback and a
    temporary directory, and return its SHOW CONFIG as a dict (logging in with
    SCRAM as the stats user proves the auth file too) and its log.
    """
    with postgres_owned_dir() as tmp:
        port = free_port()
        ini = _replace_keys(ini, {
            "listen_addr": "127.0.0.1", "listen_port": port, "logfile": tmp / "log",
            "pidfile": tmp / "pid", "auth_file": tmp / "userlist.txt",
        })
        _write(tmp / "pgbouncer.ini", ini)
        _write(tmp / "userlist.txt", userlist)
        process = subprocess.Popen(["runuser", "-u", "postgres", "--", "pgbouncer", str(tmp / "pgbouncer.ini")],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for _ in range(50):
                if process.poll() is not None or (tmp / "pid").exists():
                    break
                time.sleep(0.1)
            assert process.poll() is None, f"pgbouncer refused the configuration: {process.stdout.read()}"
            out = subprocess.run(["psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port), "-U", stats_user,
                                  "-d", "pgbouncer", "-c", "SHOW CONFIG"], capture_output=True, text=True,
                                 env={**os.environ, "PGPASSWORD": stats_password}, check=False, timeout=30)
            assert out.returncode == 0, out.stderr
            config = {row.split("|")[0]: row.split("|")[1] for row in out.stdout.splitlines() if row}
            return config, (tmp / "log").read_text()
        finally:
            process.terminate()
            process.wait(timeout=10)


def check_redis(conf, password):
    """Start redis-server on the rendered file, on loopback; return its answers to CONFIG GET and to a client without password."""
    with tempfile.TemporaryDirectory(prefix="gopbx-check-") as tmp:
        path = Path(tmp) / "redis.conf"
        path.write_text(conf)
        port = free_port()
        process = subprocess.Popen(["redis-server", str(path), "--bind", "127.0.0.1", "--port", str(port),
                                    "--daemonize", "no", "--pidfile", "", "--logfile", "", "--dir", tmp],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(port)]
            for _ in range(50):
                assert process.poll() is None, f"redis-server refused the configuration: {process.stdout.read()}"
                if subprocess.run(cli + ["PING"], capture_output=True, text=True, check=False).stdout.strip():
                    break
                time.sleep(0.1)
            authed = cli + ["--no-auth-warning", "-a", password]
            config = {}
            for key in ("maxmemory", "maxmemory-policy", "protected-mode"):
                name, value = subprocess.run(authed + ["CONFIG", "GET", key], capture_output=True, text=True,
                                             check=True).stdout.split()
                config[name] = value
            anonymous = subprocess.run(cli + ["GET", "x"], capture_output=True, text=True, check=False).stdout
            return config, anonymous.strip()
        finally:
            process.terminate()
            process.wait(timeout=10)


def _self_signed(directory):
    result = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=check",
                             "-days", "1", "-keyout", directory / "key.pem", "-out", directory / "cert.pem"],
                            capture_output=True, check=False)
    assert result.returncode == 0, result.stderr


def check_kamailio(cfg, tls_cfg, tls_dir="/etc/kamailio/tls"):
    """
    `kamailio -c` on the rendered kamailio.cfg, with its rendered tls.cfg and a
    throwaway certificate. This machine has Debian's Kamailio 5.6: a config for
    5.8 is checked without its WITH_KAMAILIO_58 block, the only 5.8-only part.
    """
    cfg = cfg.replace("#!define WITH_KAMAILIO_58\n", "")
    with tempfile.TemporaryDirectory(prefix="gopbx-check-") as tmp:
        tmp = Path(tmp)
        _self_signed(tmp)
        (tmp / "tls.cfg").write_text(tls_cfg.replace(tls_dir, str(tmp)))
        (tmp / "kamailio.cfg").write_text(cfg.replace("/etc/kamailio/tls.cfg", str(tmp / "tls.cfg")))
        result = subprocess.run(["kamailio", "-c", "-f", str(tmp / "kamailio.cfg")], capture_output=True,
                                text=True, check=False, timeout=60)
        return result.returncode, result.stdout + result.stderr


def ng_command(address, port, command, timeout=2):
    """One RTPEngine ng command (bencoded over UDP); returns the raw reply."""
    cookie = os.urandom(4).hex().encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(cookie + b" " + command, (address, port))
        reply = sock.recv(65535)
    assert reply.startswith(cookie + b" ")
    return reply[len(cookie) + 1:]


def check_rtpengine(conf):
    """Start rtpengine on the rendered config, moved to loopback, and ping it over ng."""
    with tempfile.TemporaryDirectory(prefix="gopbx-check-") as tmp:
        path = Path(tmp) / "rtpengine.conf"
        path.write_text(conf)
        port = free_port()
        process = subprocess.Popen(["rtpengine", "--config-file", str(path), "--foreground", "--log-stderr",
                                    "--interface", "127.0.0.1", "--listen-ng", f"127.0.0.1:{port}",
                                    "--listen-cli", f"127.0.0.1:{free_port()}", "--table", "-1",
                                    "--pidfile", str(Path(tmp) / "pid")],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for _ in range(50):
                assert process.poll() is None, f"rtpengine refused the configuration: {process.stdout.read()}"
                try:
                    return ng_command("127.0.0.1", port, b"d7:command4:pinge", timeout=0.2)
                except OSError:
                    time.sleep(0.1)
            raise AssertionError("rtpengine did not answer an ng ping")
        finally:
            process.terminate()
            process.wait(timeout=10)


def check_nginx(conf, tls_dir="/etc/nginx/tls"):
    """
    `nginx -t` on the rendered nginx.conf with a throwaway certificate; returns its
    output. `nginx -t` binds its listeners, so each address moves to loopback.
    """
    addresses = sorted(set(re.findall(r"listen ([0-9.]+):", conf)))
    for number, address in enumerate(addresses, start=1):
        conf = conf.replace(f"listen {address}:", f"listen 127.28.250.{number}:")
    with tempfile.TemporaryDirectory(prefix="gopbx-check-") as tmp:
        tmp = Path(tmp)
        _self_signed(tmp)
        (tmp / "nginx.conf").write_text(conf.replace(tls_dir, str(tmp)).replace("/run/nginx.pid", str(tmp / "pid")))
        result = subprocess.run(["nginx", "-t", "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        return result.stderr


def check_freeswitch(files, config_dir="/etc/freeswitch"):
    """
    FreeSWITCH can't be installed here (no Debian 12 package), so do what it does
    with its configuration: every file must be well-formed XML (xmllint), then
    freeswitch.xml is assembled the way FreeSWITCH's preprocessor does it
    (X-PRE-PROCESS include with globs, set, $${var}). Returns the assembled
    document; an undefined $${var} or an include matching nothing fails here.
    """
    import fnmatch
    from xml.etree import ElementTree as ET

    ours = {path[len(config_dir) + 1:]: text for path, text in files.items() if path.startswith(config_dir + "/")}
    with tempfile.TemporaryDirectory(prefix="gopbx-check-") as tmp:
        for name, text in ours.items():
            (Path(tmp) / name.replace("/", "__")).write_text(text)
        result = subprocess.run(["xmllint", "--noout", *sorted(str(path) for path in Path(tmp).iterdir())],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
    variables = {}

    def expand(element):
        for child in list(element):
            if child.tag != "X-PRE-PROCESS":
                expand(child)
                continue
            index = list(element).index(child)
            element.remove(child)
            command, data = child.get("cmd"), child.get("data")
            if command == "set":
                name, value = data.split("=", 1)
                variables[name] = value
            elif command == "include":
                matches = sorted(name for name in ours if fnmatch.fnmatch(name, data))
                assert matches, f"X-PRE-PROCESS include {data!r} matches no file"
                for name in matches:
                    included = ET.fromstring(ours[name])
                    expand(included)
                    # FreeSWITCH drops an <include> wrapper and keeps what is inside.
                    for offset, item in enumerate(list(included) if included.tag == "include" else [included]):
                        element.insert(index + offset, item)
                    index += len(included) if included.tag == "include" else 1
            else:
                raise AssertionError(f"unexpected X-PRE-PROCESS cmd {command!r}")

    def substitute(element):
        for key, value in element.attrib.items():
            for name in re.findall(r"\$\$\{([^}]+)\}", value):
                assert name in variables, f"$${{{name}}} is never set"
                value = value.replace(f"$${{{name}}}", variables[name])
            element.set(key, value)
        for child in element:
            substitute(child)

    document = ET.fromstring(ours["freeswitch.xml"])
    expand(document)
    substitute(document)
    return document, variables


def check_keepalived(conf, directory, interfaces=("wg-gopbx", "enp1s0")):
    """
    `keepalived --config-test` on the rendered config, its scripts copied where it
    can check them, in a network namespace made for it where its INTERFACES exist
    (it checks they do; loopback can't carry VRRP).
    """
    namespace = f"gopbx-ka-check-{os.getpid()}"
    libexec = Path(tempfile.mkdtemp(prefix="gopbx-check-", dir="/run"))
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        for interface in interfaces:
            subprocess.run(["ip", "-n", namespace, "link", "add", interface, "type", "bridge"], check=True)
        libexec.chmod(0o755)
        for script in (Path(__file__).resolve().parents[2] / "salt/keepalived/files/libexec").iterdir():
            shutil.copy(script, libexec / script.name)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "keepalived.conf").write_text(conf.replace("/usr/local/lib/gopbx", str(libexec)))
        result = subprocess.run(["ip", "netns", "exec", namespace, "keepalived",
                                 f"--config-test={directory / 'test.log'}", "-f", str(directory / "keepalived.conf")],
                                capture_output=True, text=True, check=False, timeout=30)
        return result, (directory / "test.log").read_text() if (directory / "test.log").exists() else ""
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
        shutil.rmtree(libexec, ignore_errors=True)


def serve_knot(conf, zones, directory):
    """
    knotd on the rendered knot.conf, moved to a free loopback port with its files
    under DIRECTORY, serving ZONES ({zone name: zone file text}). Returns
    (process, port); the caller stops it.
    """
    directory = Path(directory)
    port = free_port()
    for name, text in zones.items():
        (directory / f"{name}.zone").write_text(text)
    conf = re.sub(r"listen: .*", f"listen: 127.0.0.1@{port}", conf)
    conf = conf.replace('"/var/lib/knot"', f'"{directory}"').replace('"/run/knot"', f'"{directory}"')
    conf = conf.replace("user: knot:knot", "user: root:root")
    extra = "".join(f"  - domain: {name}\n" for name in zones if f"domain: {name}\n" not in conf)
    (directory / "knot.conf").write_text(conf + extra)
    process = subprocess.Popen(["knotd", "-c", str(directory / "knot.conf")], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    return process, port


def kdig(port, name, record_type, server="127.0.0.1"):
    """The answer section's records as (name, ttl, type, data) tuples, and the flags line."""
    result = subprocess.run(["kdig", f"@{server}", "-p", str(port), "+noall", "+answer", "+norecurse", name,
                             record_type], capture_output=True, text=True, check=True, timeout=10)
    return [tuple(line.split(None, 4)[:2] + line.split(None, 4)[3:]) for line in result.stdout.splitlines() if line]
