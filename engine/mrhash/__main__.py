from mrhash.cli import main

raise SystemExit(main())
