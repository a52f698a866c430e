from lab.train import main

main()
