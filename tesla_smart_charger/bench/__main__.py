"""`python -m tesla_smart_charger.bench` (and `make bench`): every benchmark table."""

from tesla_smart_charger.bench.tables import main

raise SystemExit(main())
