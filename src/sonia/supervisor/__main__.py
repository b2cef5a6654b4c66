import sys

from sonia.supervisor.daemon import main

sys.exit(main())
