from recs.cli import main

main()
