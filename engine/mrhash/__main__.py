from mrhash.app.cli import main

raise SystemExit(main())
