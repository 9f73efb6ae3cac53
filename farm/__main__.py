"""``python -m farm``: the command line (`farm.cli.main`)."""

import sys

try:
    from farm.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python loads the command line itself: no traceback
    if "--json" in sys.argv[1:]:
        print('{"error": "interrupted (Ctrl-C) while the command started", "state": "interrupted", '
              '"code": "interrupted"}', flush=True)
    else:
        print("interrupted (Ctrl-C) while the command started; nothing more was done", file=sys.stderr)
    sys.exit(130)
main()
