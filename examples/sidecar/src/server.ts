// `npm start`: the sidecar service. The same as `spark-export serve`.
import { serve } from './serve.js';

void serve();
