"""``cnnkit serve``: the web playground."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import CnnkitError
from ..schema import port_number
from .options import add_command

EXAMPLES = {
    "serve": "examples:\n  cnnkit serve                          # then open http://127.0.0.1:8000\n"
             "  cnnkit serve --checkpoints runs --port 8080",
}


def add_parser(sub) -> None:
    p = add_command(sub, "serve",
                    "the web playground: draw digits, classify photos, train live, explore the zoo, teach your own "
                    "classifier, find digits with a trained detector", EXAMPLES)
    p.add_argument("--checkpoints", type=Path, default=Path("runs"),
                   help="folder of run folders offered on the Draw and Detect pages; Train and Teach write their runs "
                        "here (default runs)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; the playground has no login)")
    p.add_argument("--port", type=port_number, default=8000)
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another name browsers use to reach the server (a reverse proxy, a LAN name); requests "
                        "naming any other host are refused (default: the --host address and loopback names)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> None:
    try:
        import uvicorn

        from ..serve import create_app
    except ImportError as exc:
        raise CnnkitError(f"'cnnkit serve' needs the serve extra ({exc.name} is missing); run: "
                          "pip install 'cnnkit[serve]'") from None
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this address can use the playground, "
              "including starting training runs; it has no login.", file=sys.stderr)
    try:
        args.checkpoints.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnkitError(f"--checkpoints {args.checkpoints}: cannot create that folder ({exc.strerror or exc}); "
                          "give a folder you can write to.") from None
    print(f"cnnkit playground on http://{args.host}:{args.port}  (checkpoints: {args.checkpoints.resolve()}; "
          "Ctrl-C stops it)", flush=True)
    app = create_app(args.checkpoints, host=args.host, port=args.port, allowed_hosts=tuple(args.allow_host))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
