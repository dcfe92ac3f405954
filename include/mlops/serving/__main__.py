from mlops.serving.cli import main

raise SystemExit(main())
