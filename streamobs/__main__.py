from streamobs.cli import main

raise SystemExit(main())
