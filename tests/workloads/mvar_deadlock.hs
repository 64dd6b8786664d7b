-- A Haskell MVar deadlock the GHC RTS does not report: two threads each hold one MVar and
-- take the other's, the main thread waits for them on a third, and a stable pointer keeps
-- the MVars (and so the blocked threads) reachable, so the RTS raises no
-- BlockedIndefinitelyOnMVar. A fourth thread sits in a long safe foreign call (sleep(3)).
--
-- Prints `pid N`, then `green <role> <id>` for main, lock-a, lock-b and ffi (ThreadId
-- numbers), then `ready` once both lockers hold their first MVar and are about to block.
{-# LANGUAGE ForeignFunctionInterface #-}
import Control.Concurrent
import Control.Monad (void)
import Foreign.C.Types
import Foreign.StablePtr
import GHC.Conc (labelThread)
import System.IO
import System.Posix.Process (getProcessID)

foreign import ccall safe "unistd.h sleep" c_sleep :: CUInt -> IO CUInt

threadNumber :: ThreadId -> String
threadNumber t = drop (length "ThreadId ") (show t)

main :: IO ()
main = do
  hSetBuffering stdout LineBuffering
  pid <- getProcessID
  putStrLn ("pid " ++ show pid)
  a <- newMVar ()
  b <- newMVar ()
  holding <- newEmptyMVar
  go <- newEmptyMVar
  done <- newEmptyMVar
  _ <- newStablePtr (a, b, done)
  let locker first second = do
        takeMVar first
        putMVar holding ()
        takeMVar go
        takeMVar second
        putMVar done ()
  lockA <- forkIO (locker a b)
  lockB <- forkIO (locker b a)
  labelThread lockA "lock-a"
  labelThread lockB "lock-b"
  takeMVar holding
  takeMVar holding
  ffi <- forkIO (void (c_sleep 100000))
  me <- myThreadId
  mapM_
    (\(role, t) -> putStrLn ("green " ++ role ++ " " ++ threadNumber t))
    [("main", me), ("lock-a", lockA), ("lock-b", lockB), ("ffi", ffi)]
  putMVar go ()
  putMVar go ()
  putStrLn "ready"
  takeMVar done
