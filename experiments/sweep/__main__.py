import sys

from experiments.sweep.size import main

sys.exit(main())
