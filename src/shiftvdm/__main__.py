from shiftvdm.cli import main

raise SystemExit(main())
