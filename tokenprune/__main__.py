from tokenprune.cli import main

main()
