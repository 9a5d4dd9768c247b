import sys

from heygem_pipeline.instance.setup import main

sys.exit(main())
