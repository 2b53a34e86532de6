from speculators_operator.main import main

raise SystemExit(main())
