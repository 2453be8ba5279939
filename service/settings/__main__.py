"""``python -m service.settings``: print or write the generated settings documents."""

import sys

from service.settings.docs import main

sys.exit(main())
