from niche.cli import main

main()
