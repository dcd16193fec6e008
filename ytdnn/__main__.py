from ytdnn.cli import main

raise SystemExit(main())
