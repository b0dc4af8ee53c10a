"""Preludes for running exported files in a clean interpreter (imported by tests, not a test module)."""

# A clean interpreter for exported files: no network, and rpztune's own packages unimportable, so an export
# that still needs either fails the test.
OFFLINE_PRELUDE = (
    "import socket, sys\n"
    "def _blocked(*args, **kwargs):\n"
    "    print('NETWORK ATTEMPT', file=sys.stderr)\n"
    "    raise OSError('network access blocked by the test')\n"
    "class _NoSocket(socket.socket):\n"
    "    def __init__(self, *args, **kwargs):\n"
    "        _blocked()\n"
    "socket.socket = _NoSocket\n"
    "socket.create_connection = socket.getaddrinfo = _blocked\n"
)
NO_RPZTUNE_PRELUDE = (
    "class _Block:  # rpztune's packages must not be importable here\n"
    "    def find_spec(self, name, *args):\n"
    "        if name.split('.')[0] in {'search', 'spaces', 'objectives', 'nn_numpy', 'models', 'reports'}:\n"
    "            raise ImportError(f'blocked: {name}')\n"
    "sys.meta_path.insert(0, _Block())\n"
    "sys.path.insert(0, '.')\n"
)
