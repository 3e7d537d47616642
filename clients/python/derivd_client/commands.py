"""The ``derivd`` command: runs the verbs of whichever derivd packages are installed.

Two packages install a ``derivd`` script: the server (``serve``, ``worker``) and the SDK
(``gradient``, ``jacobian``, ``spy``, ...). Each registers its verbs in the ``derivd.commands``
entry-point group, every verb naming that package's ``main(argv)``, and each package's ``derivd``
script is this dispatcher: it finds the verb among the registered ones and hands it the whole
command line. So the packages never import each other, it does not matter which one's script the
last install wrote, and ``derivd --help`` lists exactly the verbs that are installed.

This file exists twice, byte for byte (``services/derivd/commands.py`` and
``clients/python/derivd_client/commands.py``; a test keeps them equal), because either package may
be installed alone. Each package also installs a name of its own that needs no dispatch:
``derivd-server`` and ``derivd-client``.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points

GROUP = "derivd.commands"
HELP = ("-h", "--help")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbs = {ep.name: ep for ep in entry_points(group=GROUP)}
    # The first word that is a verb: options before it (the SDK's --url U, say) go along to its main.
    verb = next((word for word in argv if word in verbs), None)
    if verb is not None:
        try:
            run = verbs[verb].load()
        except Exception as e:  # noqa: BLE001 - installed but broken (a dependency missing, say): one line
            print(f"derivd: `{verb}` is registered by {verbs[verb].value}, which fails to load: "
                  f"{type(e).__name__}: {e}", file=sys.stderr)
            return 1
        return run(argv)
    asked = next((word for word in argv if not word.startswith("-")), None)
    if asked is not None:
        print(f"derivd: `{asked}` is not a verb of the installed packages ({', '.join(verbs) or 'none'}); "
              "serve and worker come with the server package, the client verbs with the SDK (clients/python)",
              file=sys.stderr)
        return 2
    wanted = any(word in HELP for word in argv)
    print(listing(verbs), file=sys.stdout if wanted else sys.stderr)
    return 0 if wanted else 2


def listing(verbs: dict) -> str:
    """``derivd --help``: each installed package and its verbs, with the line its module gives them."""
    lines = ["usage: derivd VERB [options]   (derivd VERB --help: its options and examples)", "",
             "derivd: exact derivatives as a service. The verbs of the installed packages:"]
    if not verbs:
        lines.append("  none: no installed package registers a derivd verb (reinstall the server or the SDK)")
    width = max(map(len, verbs), default=0) + 2
    package = None
    for name, ep in verbs.items():
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else ep.module
        if dist != package:
            package = dist
            lines += ["", f"{dist}:"]
        lines.append(f"  {name.ljust(width)}{_summary(ep)}")
    return "\n".join(lines)


def _summary(ep) -> str:
    """The verb's one line from its module's ``VERBS`` table; a module that fails to load says why."""
    try:
        return importlib.import_module(ep.module).VERBS.get(ep.name, "")
    except Exception as e:  # noqa: BLE001 - an installed but broken package is listed, not fatal
        return f"(cannot load {ep.module}: {type(e).__name__}: {e})"


if __name__ == "__main__":
    sys.exit(main())
