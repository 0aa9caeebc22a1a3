from tinyexport.benchmarks.report_cli import main

raise SystemExit(main())
