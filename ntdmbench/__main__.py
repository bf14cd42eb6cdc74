from ntdmbench.benchmark.cli import main

raise SystemExit(main())
